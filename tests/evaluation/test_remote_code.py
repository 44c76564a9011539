"""`evaluate_.py --trust-remote-code` reaches the model loaders: a student whose config.json names its own code
(here: GPT-2 whose logits that code zeroes) is scored with that code only when the flag is given."""

import json
import math
import shutil

from tests.evaluation.eval_setup import FAST

CONFIG_CODE = '''from transformers import GPT2Config


class ZeroConfig(GPT2Config):
    model_type = "gpt2"
'''
MODEL_CODE = '''from transformers import GPT2LMHeadModel

from .configuration_zero import ZeroConfig


class ZeroLogitsGPT2(GPT2LMHeadModel):
    config_class = ZeroConfig

    def forward(self, *args, **kwargs):
        out = super().forward(*args, **kwargs)
        out.logits = out.logits * 0  # every token equally likely: perplexity is the vocabulary size
        return out
'''


def test_remote_code_runs_only_with_the_flag(setup, tmp_path):
    from Code.evaluate_ import main

    student = tmp_path / "remote_student"
    shutil.copytree(setup["run"] / "best", student)
    (student / "configuration_zero.py").write_text(CONFIG_CODE)
    (student / "modeling_zero.py").write_text(MODEL_CODE)
    config = json.loads((student / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "configuration_zero.ZeroConfig",
                          "AutoModelForCausalLM": "modeling_zero.ZeroLogitsGPT2"}
    (student / "config.json").write_text(json.dumps(config))
    light = [*FAST, "--tsne-points", "0", "--gen-tokens", "0", "--max-tokens", "1000"]

    ppl = {}
    for name, flag in (("plain", []), ("remote", ["--trust-remote-code"])):
        assert main(["--ckpt", str(student), "--out-dir", str(tmp_path / name), *light, *flag]) == 0
        ppl[name] = json.loads((tmp_path / name / "metrics.json").read_text())["student"]["ppl"]
    assert math.isclose(ppl["remote"], setup["vocab"], rel_tol=1e-5)  # the folder's own code ran
    # without the flag the library's GPT-2 scores it: the tiny random model is near uniform (397.5 of 400 here),
    # but not exactly
    assert abs(ppl["plain"] - setup["vocab"]) > 0.1
