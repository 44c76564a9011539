"""The critic calibration (issue 21 item 2) and evaluation's exact-W1 judge on small synthetic states."""

import json

import pytest
import torch

from Code.evaluation.calibration import CalibrationSetup, calibrate, main, table
from Code.evaluation.metrics import exact_w1, layer_distances

pytestmark = pytest.mark.usefixtures("one_thread")


def _states(n: int = 512, dim: int = 8, shift: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    scale = torch.linspace(0.5, 10.0, dim)
    teacher = torch.randn(1, n, dim, generator=g) * scale
    student = teacher + 0.3 * torch.randn(1, n, dim, generator=g) * scale + shift * scale
    return teacher, student


def test_exact_w1_is_zero_on_identical_sets_and_a_translation_reads_its_length():
    teacher, _ = _states(n=256)
    t = teacher[0]
    assert exact_w1(t, t) == pytest.approx(0.0, abs=1e-9)
    # a translation by c teacher stds in every dimension moves every point by c sqrt(D) in std units
    std = t.std(0, unbiased=False)
    assert exact_w1(t + 0.5 * std, t) == pytest.approx(0.5 * 8**0.5, rel=1e-3)
    assert layer_distances(t + 0.5 * std, t, 16, 0)["exact_w1"] == pytest.approx(0.5 * 8**0.5, rel=1e-3)


def test_calibration_separates_a_real_gap_from_the_teachers_own_noise():
    teacher, student = _states()
    result = calibrate(teacher, student, CalibrationSetup(updates=(30, 60), samples=128, variants=("gp", "lp")))
    pairs = result["pairs"]
    for variant in ("gp", "lp"):
        real = pairs["student"]["critics"][variant]["readings"][-1]
        noise = pairs["teacher_self"]["critics"][variant]["readings"][-1]
        assert [r["updates"] for r in pairs["student"]["critics"][variant]["readings"]] == [30, 60]
        assert real["heldout"][0] > 3 * abs(noise["heldout"][0])
        assert len(pairs["teacher_self"]["critics"][variant]["grad_at_zero"]) == 1
    judges = pairs["student"]["judges"]
    assert set(judges) == {"exact_w1", "sinkhorn", "sliced_wd"}
    # the student sits 1 std off in every dimension: every judge reads more than on the teacher's own samples
    for judge in ("sinkhorn", "sliced_wd"):
        assert judges[judge][0] > 2 * pairs["teacher_self"]["judges"][judge][0]
    assert result["mse_grad_student"][0] > 0
    # on the same positions the plan is the identity: Sinkhorn is MSE in value and direction; unpaired it is not
    near = result["sinkhorn_vs_mse"]
    assert near["paired_over_mse"][0] == pytest.approx(1.0, rel=0.05) and near["paired_grad_cosine"][0] > 0.98
    assert near["unpaired_grad_cosine"][0] < 0.9
    assert "critic lp" in table(result)


def test_command_writes_json_and_refuses_bad_input(tmp_path, capsys):
    teacher, student = _states()
    states = tmp_path / "states.pt"
    torch.save({"teacher": teacher, "student": student}, states)
    out = tmp_path / "cal.json"
    args = ["--states", str(states), "--updates", "5", "--samples", "64", "--variants", "lp", "--out", str(out)]
    assert main(args) == 0
    assert json.loads(out.read_text())["pairs"]["student"]["critics"]["lp"]["readings"][0]["updates"] == 5
    assert main(["--states", str(states), "--samples", "4096", "--updates", "5"]) == 2  # too few positions
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert main(["--states", str(states), "--variants", "nope"]) == 2
    assert main(["--updates", "5"]) == 2  # no states and no models


@pytest.mark.integration
def test_command_collects_states_from_a_teacher_and_a_student(tmp_path):
    from tests.support.tiny_setup import REPO, make_data, make_teacher

    data = make_data(REPO.parent / "shared" / "corpus", tmp_path / "data")
    teacher = make_teacher(tmp_path / "teacher", n_layer=4)
    student = make_teacher(tmp_path / "student", n_layer=2, seed=1)
    out = tmp_path / "cal.json"
    args = ["--teacher", str(teacher), "--student", str(student), "--data-dir", str(data), "--tokens", "512",
            "--samples", "128", "--updates", "5", "--variants", "lp", "--out", str(out)]
    assert main(args) == 0
    result = json.loads(out.read_text())
    assert result["layers"] == 2 and result["samples"] == 128  # uniform map: student 1, 2 -> teacher 2, 4
