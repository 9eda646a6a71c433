"""Recipe configs validate their values when they are built (pure checks, today's messages); what needs the machine
-- a token to push with, the data's files -- stays in the pre-flight check before a run or a dry run (issue 31 item 7)."""

import pytest

from mm_st.training import E5VConfig, MME5Config, MMEmbedConfig, VLM2VecConfig


@pytest.mark.parametrize("build, message", [
    (lambda: E5VConfig(lora_alpha=-16, adapter="bogus"), "e5v config: adapter='bogus' is not one of lora, dora, none."),
    (lambda: E5VConfig(lora_alpha=-16), "e5v config: lora_alpha must be > 0, got -16."),
    (lambda: E5VConfig(train_template="bogus"), "e5v config: train_template='bogus' is not one of inference, upstream."),
    (lambda: VLM2VecConfig(max_steps=0), "vlm2vec config: max_steps must be -1 (from num_train_epochs) or >= 1, got 0."),
    (lambda: VLM2VecConfig(warmup=2.5), "vlm2vec config: warmup must be a share < 1 or a whole number of steps, got 2.5."),
    (lambda: VLM2VecConfig(global_batch_size=1), "vlm2vec config: global_batch_size 1 with no hard negatives"),
    (lambda: VLM2VecConfig(push_to_hub="runs/x/model"),
     "vlm2vec config: push_to_hub: 'runs/x/model' is not a Hub repo id (expected 'org/name')."),
    (lambda: E5VConfig(data="nli.csv"), "e5v config: --data is set but --model is not"),
    (lambda: MME5Config(synthetic_only=True, synthetic=False),
     "mme5 config: --synthetic-only and --no-synthetic leave no training data."),
    (lambda: MMEmbedConfig(attention="bidirectional", adapter="lora"),
     "mmembed config: attention='bidirectional' with an adapter needs pooling='latent_attention'"),
    (lambda: MMEmbedConfig(stages=["4"]), "mmembed config: stages must be some of 1, 2, 3, got ['4']."),
])
def test_an_invalid_config_is_refused_when_it_is_built(build, message):
    with pytest.raises(ValueError) as error:
        build()
    assert str(error.value).startswith(message)


def test_building_reads_nothing_and_the_pre_flight_check_finds_what_needs_the_machine(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-login"))
    missing = str(tmp_path / "missing")
    config = E5VConfig(model=missing, data=missing + ".csv", push_to_hub="org/e5v")  # no token, no files: built
    with pytest.raises(ValueError, match=r"^e5v config: push_to_hub: No Hugging Face token"):
        config.check()
    monkeypatch.setenv("HF_TOKEN", "hf_test")
    config.check()  # the token is there; the missing files are the plan's to find (check_sources, model resolution)


def test_the_pre_flight_check_validates_values_changed_after_building():
    config = VLM2VecConfig()
    config.lora_alpha = -1
    with pytest.raises(ValueError, match=r"^vlm2vec config: lora_alpha must be > 0, got -1.$"):
        config.check()
