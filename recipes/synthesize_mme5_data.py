"""Synthesize mmE5-style multimodal multilingual training data with an open (or hosted) MLLM.

Plans samples (task, modality combination, language, real images; seeded), sends one single-pass
request per sample (interpret images -> write -> self-evaluate -> revise; strict JSON), journals results
crash-safely in ``--output-dir`` (re-run the same command to resume), then exports the
``intfloat/mmE5-synthetic`` layout and optionally pushes it to the Hub.

    # an OpenAI-compatible server (vLLM, TGI, transformers serve, hosted API; key in $OPENAI_API_KEY)
    python recipes/synthesize_mme5_data.py --backend openai --base-url http://127.0.0.1:8000/v1 \\
        --model Qwen/Qwen2.5-VL-7B-Instruct --concurrency 16 --num-samples 10000 \\
        --image-source /data/laion_subset --image-license "LAION-400M (CC-BY 4.0 metadata; images: their owners)" \\
        --output-dir runs/syn --export-dir runs/syn-export

    # a local transformers checkpoint, batched
    python recipes/synthesize_mme5_data.py --backend transformers --model Qwen/Qwen2.5-VL-3B-Instruct --batch-size 8 ...

    # offline dry run of the whole pipeline with the bundled emoji images and no model: the answers are
    # template texts naming each planned sample (checks plan, journal, export and card; not training data)
    python recipes/synthesize_mme5_data.py --backend dry-run --num-samples 50 --languages en,de,ja \\
        --output-dir /tmp/syn --export-dir /tmp/syn-export

Options can also come from ``--config file.yaml`` (keys = ``SynthesisConfig`` fields); flags win.
"""

from __future__ import annotations

import argparse
import sys

from mm_st.synthesis import (
    DryRunBackend,
    OpenAIChatBackend,
    OutputDirInUse,
    PromptBuilder,
    SynthesisConfig,
    TransformersBackend,
    export_dataset,
    push_to_hub,
    synthesize,
)


def parse_languages(text: str | None):
    """``"en:0.5,de:0.25,sw"`` -> weights (a code without weight gets 1)."""
    if not text:
        return None
    weights = {}
    for item in text.split(","):
        code, _, weight = item.strip().partition(":")
        weights[code] = float(weight) if weight else 1.0
    return weights


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", help="YAML/JSON file with SynthesisConfig fields")
    parser.add_argument("--num-samples", type=int)
    parser.add_argument("--seed", type=int)
    parser.add_argument("--tasks", help="e.g. classification:1,vqa:1,retrieval:2")
    parser.add_argument("--languages", help="e.g. en:0.5,de:0.25,sw:0.25 (default: 93 languages, English half)")
    parser.add_argument("--image-source", help="image directory, mm_st:emoji, save_to_disk folder or Hub dataset id")
    parser.add_argument("--image-column")
    parser.add_argument("--image-split")
    parser.add_argument("--image-license")
    parser.add_argument("--max-attempts", type=int)
    parser.add_argument("--prompt-dir", help="directory with edited copies of mm_st/synthesis/prompts/*")
    parser.add_argument(
        "--backend", choices=("openai", "transformers", "dry-run"), default="openai",
        help="dry-run: no model, template answers naming each sample (tests the pipeline offline; not training data)",
    )  # fmt: skip
    parser.add_argument("--base-url", default="http://127.0.0.1:8000/v1")
    parser.add_argument("--model", default="default")
    parser.add_argument("--api-key-env", default="OPENAI_API_KEY", help="name of the env variable holding the API key")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--max-retries", type=int, default=5)
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument(
        "--json-mode", nargs="?", const="object", choices=("object", "schema"),
        help="send response_format: 'object' (default when given alone) = {'type': 'json_object'}; 'schema' = "
        "{'type': 'json_schema', ...} with the answer schema (servers with structured output return only valid answers)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=4, help="transformers backend batch size")
    parser.add_argument("--output-dir", required=True, help="run directory: config.json, journal.jsonl, summary.json")
    parser.add_argument("--export-dir", help="write the mmE5-synthetic layout here after the run")
    parser.add_argument("--dataset-name", default="mmE5-style synthetic data")
    parser.add_argument("--push-to-hub", metavar="REPO_ID", help="push the export as a dataset repo (token: HF_TOKEN / login)")
    parser.add_argument("--public", action="store_true", help="create the Hub repo public (default private)")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.push_to_hub:  # the repo id and a token are checked before any sample is generated
        from mm_st.hub import PushError, check_push_target

        try:
            check_push_target(args.push_to_hub)
        except PushError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2

    fields = {
        "num_samples": args.num_samples, "seed": args.seed, "tasks": parse_languages(args.tasks),
        "languages": parse_languages(args.languages), "image_source": args.image_source, "image_column": args.image_column,
        "image_split": args.image_split, "image_license": args.image_license, "max_attempts": args.max_attempts,
    }  # fmt: skip
    if args.config:
        config = SynthesisConfig.from_file(args.config, **fields)
    else:
        config = SynthesisConfig(**{k: v for k, v in fields.items() if v is not None})
    if args.backend == "openai":
        backend = OpenAIChatBackend(
            args.base_url, args.model, api_key_env=args.api_key_env, concurrency=args.concurrency, timeout=args.timeout,
            max_retries=args.max_retries, temperature=args.temperature, max_tokens=args.max_tokens, json_mode=args.json_mode or False,
            schema=PromptBuilder(args.prompt_dir).schema if args.json_mode == "schema" else None,
        )  # fmt: skip
    elif args.backend == "transformers":
        backend = TransformersBackend(args.model, batch_size=args.batch_size, max_new_tokens=args.max_tokens)
    else:
        backend = DryRunBackend()
    try:
        summary = synthesize(config, backend, args.output_dir, prompt_dir=args.prompt_dir, progress=not args.no_progress)
    except OutputDirInUse as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.export_dir:
        exported = export_dataset(args.output_dir, args.export_dir, config=config, dataset_name=args.dataset_name)
        print(f"exported {', '.join(f'{k}: {len(v)}' for k, v in exported.items())} -> {args.export_dir}")
        if args.push_to_hub:
            try:
                print("pushed:", push_to_hub(args.export_dir, args.push_to_hub, private=not args.public))
            except PushError as error:
                print(f"error: {error}", file=sys.stderr)
                return 2
    if summary["pending"]:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
