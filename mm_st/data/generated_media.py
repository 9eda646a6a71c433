"""Generated media for VLM2Vec-V2's embedded default: short videos and document pages drawn with Pillow.

Videos: a coloured shape moving across a plain background (:data:`SHAPES` x :data:`COLOURS` x :data:`DIRECTIONS`,
one video each), captioned ``"a red circle moving left"``, written as frame folders (``<root>/<video_id>/frame_0000.png``,
the layout VLM2Vec's ``process_video_frames`` reads). Pages: a document page whose title and one line of text name
an item, a city and a number (:func:`page_items`), with a question about that text and its answer.

Example:
    >>> items = video_items()
    >>> len(items), items[0].caption
    (48, 'a red circle moving left')
    >>> frames = draw_video(items[0], num_frames=4, size=56)
    >>> len(frames), frames[0].size, frames[0].getpixel((10, 28)) != frames[-1].getpixel((10, 28))
    (4, (56, 56), True)
    >>> page_items()[0].question
    'How many lamps were counted in Oslo?'
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLOURS = {"red": (220, 30, 30), "green": (30, 170, 60), "blue": (40, 70, 220), "yellow": (235, 200, 20)}
DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
BACKGROUND = (245, 245, 240)


@dataclass(frozen=True)
class VideoItem:
    """One generated video: a shape of a colour moving in a direction."""

    shape: str
    colour: str
    direction: str

    @property
    def video_id(self) -> str:
        return f"{self.colour}-{self.shape}-{self.direction}"

    @property
    def caption(self) -> str:
        return f"a {self.colour} {self.shape} moving {self.direction}"


def video_items() -> list[VideoItem]:
    """Every shape x colour x direction, in a fixed order."""
    return [VideoItem(s, c, d) for s, c, d in itertools.product(SHAPES, COLOURS, DIRECTIONS)]


def held_out_video(item: VideoItem) -> bool:
    """A quarter of the videos, one direction per shape and colour (a Latin square), so that every shape, colour and
    direction, and every pair of them but the held-out one, is also seen in training.

    >>> held = [v for v in video_items() if held_out_video(v)]
    >>> len(held), sorted({v.direction for v in held}) == sorted(DIRECTIONS)
    (12, True)
    """
    return (SHAPES.index(item.shape) + list(COLOURS).index(item.colour) + list(DIRECTIONS).index(item.direction)) % 4 == 0


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], radius: float, fill) -> None:
    x, y = centre
    box = (x - radius, y - radius, x + radius, y + radius)
    if shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(x, y - radius), (x + radius, y + radius), (x - radius, y + radius)], fill=fill)


def draw_video(item: VideoItem, num_frames: int = 8, size: int = 56) -> list[Image.Image]:
    """The frames of ``item``: the shape travels from one side to the other along its direction."""
    if num_frames < 2:
        raise ValueError(f"A generated video needs at least 2 frames, got num_frames={num_frames}.")
    radius = size / 6
    dx, dy = DIRECTIONS[item.direction]
    frames = []
    for t in range(num_frames):
        step = -1 + 2 * t / (num_frames - 1)  # -1 .. 1 along the direction
        centre = (size / 2 + dx * step * (size / 2 - radius), size / 2 + dy * step * (size / 2 - radius))
        frame = Image.new("RGB", (size, size), BACKGROUND)
        _draw_shape(ImageDraw.Draw(frame), item.shape, centre, radius, COLOURS[item.colour])
        frames.append(frame)
    return frames


def write_videos(root: str | Path, items: Sequence[VideoItem], num_frames: int = 8, size: int = 56) -> Path:
    """``<root>/<video_id>/frame_0000.png ...`` for each item (a folder already complete is left as it is)."""
    root = Path(root)
    for item in items:
        folder = root / item.video_id
        if len(list(folder.glob("frame_*.png"))) == num_frames:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        for t, frame in enumerate(draw_video(item, num_frames, size)):
            frame.save(folder / f"frame_{t:04d}.png")
    return root


# -- document pages ---------------------------------------------------------------------------------------------

PAGE_THINGS = ("lamps", "bridges", "ferries", "gardens", "bakeries", "museums", "clocks", "harbours")
PAGE_CITIES = ("Oslo", "Lima", "Pune", "Graz", "Kyoto", "Perth")
PAGE_SOURCES = ("Textbooks", "Manuallib", "SlideVQA")  # VisRAG-Ret-Train sources whose prompts the rows get


@dataclass(frozen=True)
class PageItem:
    """One rendered page: ``count`` ``thing`` in ``city`` (title and body), a question about it and its answer."""

    index: int
    thing: str
    city: str
    count: int

    @property
    def title(self) -> str:
        return f"{self.city} {self.thing} survey"

    @property
    def body(self) -> list[str]:
        return [f"Report {self.index + 1}.", f"We counted {self.count} {self.thing}", f"in {self.city} this year."]

    @property
    def question(self) -> str:
        return f"How many {self.thing} were counted in {self.city}?"

    @property
    def answer(self) -> str:
        return f"{self.count} {self.thing} in {self.city}"

    @property
    def source(self) -> str:
        return PAGE_SOURCES[self.index % len(PAGE_SOURCES)]


def page_items() -> list[PageItem]:
    """Every thing x city (48 pages), each with its own count."""
    return [PageItem(i, thing, city, 10 + 7 * i) for i, (thing, city) in
            enumerate(itertools.product(PAGE_THINGS, PAGE_CITIES))]


def draw_page(item: PageItem, width: int = 112, height: int = 112) -> Image.Image:
    """A white page: the title in a dark band, then the body lines (Pillow's built-in font)."""
    page = Image.new("RGB", (width, height), (255, 255, 255))
    draw = ImageDraw.Draw(page)
    draw.rectangle((0, 0, width, 18), fill=(30, 40, 80))
    draw.text((3, 4), item.title, fill=(255, 255, 255))
    for line, text in enumerate(item.body):
        draw.text((3, 26 + 14 * line), text, fill=(0, 0, 0))
    return page


# -- the papers' file layouts ---------------------------------------------------------------------------------------

CAPTION_TURN = "<video>\nDescribe what happens in the video."  # a LLaVA-Hound caption conversation's human turn


def qa_turns(item: VideoItem) -> tuple[str, str]:
    """A LLaVA-Hound QA conversation about ``item``: (human turn, answer); the answer names the whole video."""
    return (f"<video>\nWhat is the {item.colour} shape doing?",
            f"The {item.colour} {item.shape} is moving {item.direction}.")


def write_llava_hound(path: str | Path, items: Sequence[VideoItem], kind: str) -> Path:
    """LLaVA-Hound's jsonl (``id``, ``video``, ``conversations``): ``kind`` 'caption' (the caption) or 'qa'."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = []
    for item in items:
        human, gpt = (CAPTION_TURN, item.caption) if kind == "caption" else qa_turns(item)
        lines.append(json.dumps({"id": f"{kind}-{item.video_id}", "video": item.video_id,
                                 "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}))
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def write_pages(directory: str | Path, items: Sequence[PageItem], name: str) -> tuple[Path, Path]:
    """The pages of ``items`` as ``{name}-colpali.parquet`` (colpali_train_set's columns: query, image, answer, ...)
    and ``{name}-visrag.parquet`` (VisRAG-Ret-Train's: query, image, source)."""
    import io

    import datasets

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    images = []
    for item in items:
        buffer = io.BytesIO()
        draw_page(item).save(buffer, format="PNG")
        images.append({"bytes": buffer.getvalue(), "path": f"page-{item.index}.png"})
    colpali = datasets.Dataset.from_dict(
        {"query": [i.question for i in items], "image": images, "image_filename": [i["path"] for i in images],
         "answer": [i.answer for i in items], "answer_type": ["extractive"] * len(items),
         "source": ["mm_st-generated"] * len(items), "options": [None] * len(items), "page": [""] * len(items),
         "model": [""] * len(items), "prompt": [""] * len(items)},
        features=datasets.Features({"query": datasets.Value("string"), "image": datasets.Image(),
                                    "image_filename": datasets.Value("string"), "answer": datasets.Value("string"),
                                    "answer_type": datasets.Value("string"), "source": datasets.Value("string"),
                                    "options": datasets.Value("string"), "page": datasets.Value("string"),
                                    "model": datasets.Value("string"), "prompt": datasets.Value("string")}))
    visrag = datasets.Dataset.from_dict(
        {"query": [i.question for i in items], "image": images, "source": [i.source for i in items]},
        features=datasets.Features({"query": datasets.Value("string"), "image": datasets.Image(),
                                    "source": datasets.Value("string")}))
    import pyarrow.parquet as pq

    paths = directory / f"{name}-colpali.parquet", directory / f"{name}-visrag.parquet"
    for ds, path in ((colpali, paths[0]), (visrag, paths[1])):
        pq.write_table(ds.data.table, path)  # the features travel in the schema's metadata
    return paths
