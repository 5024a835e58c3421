"""cifarlin gradcheck: the report, the verdict and its exit code."""

from __future__ import annotations

import json
import resource
import shlex
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from cifar_files import make_split
from cifarlin.cli import app
from cifarlin.core import model
from cifarlin.errors import ModelFileError
from cifarlin.store import machine
from cifarlin.work import gradcheck
from tolerances import U64, assert_within, normalised_error, pixel_statistics_error

FIELDS = {"max_rel", "p99_rel", "mean_rel", "max_abs", "checked", "failing", "pass"}


def test_random_json_passes(runner):
    r = runner.invoke(app, ["gradcheck", "--random", "--json", "--n", "5", "--dims", "100", "--lam", "0.1"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)  # stdout holds exactly one JSON object
    assert out["pass"] is True and out["inputs"] == "random"
    assert out["method"] == "centred" and out["h"] == 1e-6 and out["lam"] == 0.1
    for name, checked in (("W", 10 * 100), ("b", 10)):
        assert set(out[name]) >= FIELDS
        assert out[name]["checked"] == checked and out[name]["failing"] == 0
        assert out[name]["max_abs"] < 1e-8 and out[name]["p99_rel"] < 1e-6
    assert "PASS" in r.stderr


def test_complex_step_default_h(runner):
    r = runner.invoke(app, ["gradcheck", "--random", "--json", "--method", "complex", "--dims", "64"])
    assert r.exit_code == 0
    out = json.loads(r.stdout)
    assert out["h"] == 1e-20
    assert out["W"]["max_rel"] < 1e-10 and out["b"]["max_rel"] < 1e-10


@pytest.mark.parametrize("loss", ["ce", "svm", "bce", "l2svm"])
@pytest.mark.parametrize("method", ["centred", "complex"])
def test_broken_gradient_fails_with_exit_1(runner, monkeypatch, loss, method):
    """Bug: a wrong analytic gradient of any loss that the check lets pass."""
    real = model.gradients

    def broken(W, b, X, y, lam, loss="ce"):
        dW, db = real(W, b, X, y, lam, loss)
        dW = dW.copy()
        dW[3, 7] += 1e-4
        return dW, db

    monkeypatch.setattr(model, "gradients", broken)
    args = ["gradcheck", "--random", "--json", "--dims", "50", "--loss", loss, "--method", method]
    r = runner.invoke(app, args)
    assert r.exit_code == 1
    out = json.loads(r.stdout)
    assert out["pass"] is False and out["W"]["failing"] == 1 and out["b"]["failing"] == 0
    assert out["loss"] == loss
    assert "FAIL: 1 of 510 entries outside |ga - gn| <= 1e-08 + 1e-06 (|ga| + |gn|)" in r.stderr
    doc = gradcheck.read_result(Path(f"outputs/gradcheck-{loss}.json"))  # a failed check is written too
    assert doc["pass"] is False and doc["W"]["pass"] is False and doc["W"]["failing"] == 1
    assert doc["b"]["pass"] is True and doc["loss"] == loss


@pytest.mark.parametrize(
    "args, value",
    [
        (["--n", "0"], "--n 0"),
        (["--h", "-1"], "--step -1"),
        (["--step", "0"], "--step 0.0"),
        (["--dims", "5000"], "--dims 5000"),
        (["--tol", "-1"], "--tol -1"),
        (["--lam", "nan"], "--lam nan"),
        (["--method", "forward"], "forward"),
    ],
)
def test_bad_values_exit_2_with_one_line(runner, args, value):
    r = runner.invoke(app, ["gradcheck", "--random", *args])
    assert r.exit_code == 2
    assert r.stdout == ""
    line = r.stderr.strip()
    assert "\n" not in line and line.startswith("Error:") and value in line
    assert "Traceback" not in r.output


def test_without_data_says_where_it_looked(runner, tmp_path):
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tmp_path / "nothing"), "--no-download"])
    assert r.exit_code == 1
    line = r.stderr.strip()
    assert "\n" not in line
    assert str(tmp_path / "nothing") in line and "cifarlin download" in line


def test_on_tiny_data_uses_normalised_training_images(runner, tiny_py, monkeypatch):
    """Catches: the sample normalised by the mean and std of the n sampled rows instead of the
    whole training split, rows other than the first n, labels out of step with their images,
    inputs other than the first --dims, and weights other than training's initial ones."""
    checked = []
    real = gradcheck.check

    def spy(W, b, X, y, cfg, inputs):
        checked.append((W, b, X, y))
        return real(W, b, X, y, cfg, inputs)

    monkeypatch.setattr(gradcheck, "check", spy)
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tiny_py), "--n", "8", "--dims", "200", "--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    assert out["inputs"] == str(tiny_py) and out["n"] == 8 and out["W"]["checked"] == 2000
    [(W, b, X, y)] = checked
    images, labels = make_split(50, seed=1)  # data_batch_1, the whole training split, made independently
    pixels = images / 255
    mean, std = pixels.mean(axis=0), pixels.std(axis=0)  # over all 50 training images
    expected = (pixels[:8] - mean) / std
    # The command's statistics (exact sums) and these (pixel_statistics_error), through z: the
    # mean's error over std and |z| times std's relative one; both normalisations' own roundings.
    mean_error, std_error = pixel_statistics_error(pixels)
    rounding = 2 * normalised_error(expected, mean / std, U64)
    bound = (mean_error + np.abs(expected) * std_error) / std + rounding
    assert_within(X, expected[:, :200], bound[:, :200], "normalised pixels")
    assert np.array_equal(y, labels[:8])
    own = (pixels[:8] - pixels[:8].mean(axis=0)) / pixels[:8].std(axis=0)  # the bug's sample
    assert np.abs(own - expected).max() > 0.1  # differs enough to be seen
    rng = np.random.default_rng(0)
    W0 = rng.normal(0.0, 0.01, size=(10, 3072))
    assert np.array_equal(W, W0[:, :200]) and np.array_equal(b, rng.normal(0.0, 0.01, size=10))


def test_n_larger_than_the_training_set(runner, tiny_py):
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tiny_py), "--n", "51"])
    assert r.exit_code == 2 and "--n 51" in r.stderr


def test_report_statistics():
    ga = np.array([1.0, 2.0, 0.0, 1e-12])
    gn = np.array([1.0, 2.0 + 1e-5, 0.0, 0.0])
    p = gradcheck.compare("W", ga, gn, tol=1e-6, atol=1e-8)
    assert p.checked == 4 and p.failing == 1 and not p.passed
    assert p.max_abs == pytest.approx(1e-5, rel=0, abs=2 * 2 * U64)  # (2 + 1e-5) - 2: 2 + 1e-5 rounds
    assert p.max_rel == 1e-12 / 1e-8  # |1e-12 - 0| / max(|a|, |b|, atol): one division, as here


def test_random_problem_uses_training_init():
    cfg = gradcheck.GradcheckConfig(n=3, dims=40, seed=5)
    W, b, X, y = gradcheck.random_problem(cfg)
    W0, b0 = model.init_params(np.random.default_rng(5))
    assert np.array_equal(W, W0[:, :40]) and np.array_equal(b, b0)
    assert X.shape == (3, 40) and y.shape == (3,)


def test_nan_gradients_fail(runner, monkeypatch):
    real = model.gradients

    def nan_grads(W, b, X, y, lam, loss="ce"):
        dW, db = real(W, b, X, y, lam, loss)
        return np.full_like(dW, np.nan), db

    monkeypatch.setattr(model, "gradients", nan_grads)
    r = runner.invoke(app, ["gradcheck", "--random", "--json", "--dims", "20"])
    assert r.exit_code == 1, r.output
    out = json.loads(r.stdout)
    assert out["pass"] is False and out["W"]["failing"] == 200 and out["W"]["max_rel"] is None
    assert gradcheck.compare("W", np.array([np.nan, 1.0]), np.ones(2), 1e-6, 1e-8).failing == 1


# ---------------------------------------------------------------------------------------------
# The result file: outputs/gradcheck-LOSS.json, --out FILE, --no-save
# ---------------------------------------------------------------------------------------------


def files_under(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize(
    "loss, args, command",
    [
        ("ce", [], "cifarlin gradcheck --dims 30 --random"),
        (
            "svm",
            ["--loss", "svm", "--lam", "0.1"],
            "cifarlin gradcheck --loss svm --dims 30 --lam 0.1 --random",
        ),
    ],
)
def test_the_result_file_holds_what_json_prints(runner, loss, args, command):
    """Bugs: no file, another name than the loss's, numbers other than --json's (rounded, or of
    another run), provenance missing or wrong."""
    before = datetime.now(UTC).replace(microsecond=0)
    r = runner.invoke(app, ["gradcheck", "--random", "--json", "--dims", "30", *args])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout)
    path = Path("outputs") / f"gradcheck-{loss}.json"
    assert files_under(Path(".")) == ["outputs", str(path)]
    assert r.stderr.splitlines()[-1] == f"wrote {path}"  # --json: the human-readable result on stderr
    doc = gradcheck.read_result(path)
    assert {k: doc[k] for k in out} == out  # every value of --json, exactly
    assert {k: v for k, v in doc.items() if k not in out} == {
        "kind": "gradcheck",
        "format_version": 1,
        "cifarlin_version": "0.1.0",
        "created": doc["created"],
        "command": command,
        "arithmetic": machine.arithmetic(),
        "data": None,
    }
    created = datetime.fromisoformat(doc["created"])
    assert created.utcoffset().total_seconds() == 0 and before <= created <= datetime.now(UTC)


def test_each_loss_has_its_own_file(runner):
    for loss in ("ce", "bce"):
        r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "--loss", loss])
        assert r.exit_code == 0, r.output
        assert r.stdout.splitlines()[-1] == f"wrote outputs/gradcheck-{loss}.json"  # a result: stdout
    assert files_under(Path("outputs")) == ["gradcheck-bce.json", "gradcheck-ce.json"]
    assert gradcheck.read_result(Path("outputs/gradcheck-ce.json"))["loss"] == "ce"
    assert gradcheck.read_result(Path("outputs/gradcheck-bce.json"))["loss"] == "bce"


def test_the_recorded_command_repeats_the_check(runner):
    """Bugs: a flag of another name than the option's (h is --step), a value rounded (%g keeps
    6 digits of 0.123456789), a value left out, --random forgotten."""
    args = ["--n", "7", "--dims", "40", "--lam", "0.123456789", "--step", "1e-05", "--tol", "1e-05"]
    args += ["--atol", "1e-09", "--seed", "3", "--loss", "bce", "--method", "complex", "--random"]
    r = runner.invoke(app, ["gradcheck", *args, "--json"])
    assert r.exit_code == 0, r.output
    doc = gradcheck.read_result(Path("outputs/gradcheck-bce.json"))
    words = shlex.split(doc["command"])
    assert words[:2] == ["cifarlin", "gradcheck"] and len(words) == 2 + len(args)
    again = runner.invoke(app, [*words[1:], "--json", "--no-save"])
    assert again.exit_code == 0, again.output
    first, second = json.loads(r.stdout), json.loads(again.stdout)
    first.pop("seconds"), second.pop("seconds")
    assert second == first


def test_on_data_the_file_names_the_data_folder(runner, tiny_py):
    r = runner.invoke(app, ["gradcheck", "--data-dir", str(tiny_py), "--n", "4", "--dims", "20", "-q"])
    assert r.exit_code == 0, r.output
    doc = gradcheck.read_result(Path("outputs/gradcheck-ce.json"))
    assert doc["data"] == {"folder": str(tiny_py), "format": "python"} and doc["inputs"] == str(tiny_py)
    assert doc["command"] == "cifarlin gradcheck --n 4 --dims 20"
    assert r.stdout.splitlines()[-1] == "wrote outputs/gradcheck-ce.json"  # --quiet keeps the result


def test_out_writes_elsewhere_making_its_folders(runner):
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "--out", "a/b/check.json"])
    assert r.exit_code == 0, r.output
    assert files_under(Path(".")) == ["a", "a/b", "a/b/check.json"]  # no outputs/, no temporary file
    assert gradcheck.read_result(Path("a/b/check.json"))["W"]["checked"] == 100
    assert "wrote a/b/check.json" in r.stdout


def test_out_replaces_an_earlier_result(runner):
    Path("r.json").write_text("an earlier file")
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "-o", "r.json"])
    assert r.exit_code == 0, r.output
    assert gradcheck.read_result(Path("r.json"))["pass"] is True and files_under(Path(".")) == ["r.json"]


def test_no_save_writes_nothing(runner):
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "--no-save"])
    assert r.exit_code == 0, r.output
    assert files_under(Path(".")) == [] and "wrote" not in r.output
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "--no-save", "--out", "r.json"])
    assert r.exit_code == 2 and r.stderr.strip() == "Error: --out r.json and --no-save: choose one"
    assert files_under(Path(".")) == []


@pytest.mark.parametrize(
    "make, out, message",
    [
        (["d/"], "d", "Error: --out 'd': is a folder; give a file in it, e.g. --out d/gradcheck-ce.json"),
        (["f"], "f/r.json", "Error: --out 'f/r.json': f is not a folder; give --out FILE in a folder"),
        (
            ["f"],
            "f/sub/r.json",
            "Error: --out 'f/sub/r.json': f is not a folder; give --out FILE in a folder",
        ),
        ([], "n" * 300 + ".json", "cannot be used as a file here (a name over 255 bytes)"),
    ],
    ids=["a folder", "under a file", "deeper under a file", "a name too long"],
)
def test_a_bad_out_is_one_line_before_the_check(runner, monkeypatch, make, out, message):
    for name in make:
        Path(name).mkdir() if name.endswith("/") else Path(name).write_text("x")
    before = files_under(Path("."))
    monkeypatch.setattr(gradcheck, "check", lambda *a: pytest.fail("the check ran before --out was checked"))
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "--out", out])
    assert r.exit_code == 2 and r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("Error: --out ") and message in r.stderr
    assert files_under(Path(".")) == before


@pytest.fixture
def limit_file_size():
    """RLIMIT_FSIZE for this process while the test runs (Python ignores SIGXFSZ: a write past it
    fails with EFBIG, a real fault of the kernel)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    yield lambda limit: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_failed_write_is_one_line_and_keeps_the_earlier_file(runner, limit_file_size):
    Path("r.json").write_text("the earlier result")
    limit_file_size(100)  # a result is about 1 kB
    r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "-o", "r.json", "-q"])
    limit_file_size(resource.RLIM_INFINITY)
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert r.stderr == (
        "Error: r.json: cannot be written (File too large); any earlier version of it is unchanged; "
        "write it elsewhere with --out FILE, or not at all with --no-save\n"
    )
    assert files_under(Path(".")) == ["r.json"] and Path("r.json").read_text() == "the earlier result"


def _writable_by_anyone(folder: Path) -> bool:
    probe = folder / "probe"
    try:
        probe.write_text("")
    except PermissionError:
        return False
    probe.unlink()
    return True


def test_an_unwritable_folder_is_one_line(runner, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    if _writable_by_anyone(ro):
        pytest.skip("this process writes into folders of mode 555 (root)")
    for out, named in (
        ("ro/r.json", "ro/r.json: cannot be written"),
        ("ro/sub/r.json", "ro/sub: cannot create"),
    ):
        r = runner.invoke(app, ["gradcheck", "--random", "--dims", "10", "-o", out, "-q"])
        assert r.exit_code == 1 and r.stderr.count("\n") == 1, r.output
        assert r.stderr.startswith(f"Error: {named}") and "(Permission denied)" in r.stderr
        assert "--out FILE" in r.stderr and "--no-save" in r.stderr
    assert files_under(ro) == []


# ---------------------------------------------------------------------------------------------
# read_result: a result file read without trusting it
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def result_doc() -> dict:
    return gradcheck.document(gradcheck.run(gradcheck.GradcheckConfig(n=3, dims=5)), None)


def test_save_and_read_back(result_doc):
    gradcheck.save_result(Path("x/r.json"), result_doc)
    assert gradcheck.read_result(Path("x/r.json")) == json.loads(json.dumps(result_doc))


def test_nan_is_written_as_null_and_read_back(result_doc):
    result_doc["W"]["max_rel"] = float("nan")
    gradcheck.save_result(Path("r.json"), result_doc)
    assert "NaN" not in Path("r.json").read_text()
    assert gradcheck.read_result(Path("r.json"))["W"]["max_rel"] is None


def _without(doc: dict, *keys: str) -> dict:
    doc = json.loads(json.dumps(doc))
    *parents, last = keys
    inner = doc
    for k in parents:
        inner = inner[k]
    del inner[last]
    return doc


BROKEN = {
    "not JSON": (lambda d: b"{not json", "not JSON (Expecting property name"),
    "not UTF-8": (lambda d: b"\xff\xfe{}", "not JSON (not UTF-8 text)"),
    "NaN": (lambda d: b'{"kind": NaN}', "not JSON (NaN is not JSON)"),
    "a list": (lambda d: b"[1, 2]", "a JSON list, not a gradcheck result (an object)"),
    "a kind of its own": (lambda d: {**d, "kind": "model"}, "kind 'model', not 'gradcheck'"),
    "no kind": (lambda d: _without(d, "kind"), "kind None, not 'gradcheck'"),
    "a newer format": (lambda d: {**d, "format_version": 2}, "format_version 2: this cifarlin reads 1"),
    "no verdict": (lambda d: _without(d, "pass"), "no verdict"),
    "no W": (lambda d: _without(d, "W"), "no entry 'W'"),
    "no b": (lambda d: _without(d, "b"), "no entry 'b'"),
    "W a list": (lambda d: {**d, "W": [1]}, "no entry 'W'"),
    "no b.p99_rel": (lambda d: _without(d, "b", "p99_rel"), "b has no 'p99_rel'"),
    "no W.pass": (lambda d: _without(d, "W", "pass"), "W has no 'pass'"),
    "a text for a number": (
        lambda d: {**d, "W": {**d["W"], "max_abs": "0.1"}},
        "W.max_abs is string, not a number or null",
    ),
    "a negative count": (lambda d: {**d, "b": {**d["b"], "failing": -1}}, "b.failing is -1, not a count"),
    "true for a count": (lambda d: {**d, "b": {**d["b"], "checked": True}}, "b.checked is True, not a count"),
    "a verdict of 1": (lambda d: {**d, "W": {**d["W"], "pass": 1}}, "W.pass is 1, not true or false"),
    "over 1 MB": (
        lambda d: json.dumps(d).encode() + b" " * gradcheck.MAX_RESULT_BYTES,
        f"bytes, more than a gradcheck result ever holds ({gradcheck.MAX_RESULT_BYTES:,} bytes)",
    ),
}


@pytest.mark.parametrize("case", BROKEN)
def test_read_result_refuses_what_is_not_a_result(result_doc, case):
    make, why = BROKEN[case]
    content = make(result_doc)
    path = Path("r.json")
    path.write_bytes(content if isinstance(content, bytes) else json.dumps(content).encode())
    with pytest.raises(ModelFileError) as e:
        gradcheck.read_result(path)
    message = str(e.value)
    assert message.startswith("r.json: ") and why in message and "\n" not in message, message


def test_read_result_of_a_folder_or_nothing(tmp_path):
    with pytest.raises(ModelFileError, match=r"^missing\.json: no such file; cifarlin gradcheck writes it$"):
        gradcheck.read_result(Path("missing.json"))
    with pytest.raises(ModelFileError, match=rf"^{tmp_path}: is a folder$"):
        gradcheck.read_result(tmp_path)


def test_read_result_refuses_a_large_file_unopened(monkeypatch):
    big = Path("big.json")
    with open(big, "wb") as f:
        f.truncate(1 << 30)  # a sparse GiB: reading it whole would take a second and a GiB
    monkeypatch.setattr(gradcheck, "open", lambda *a, **k: pytest.fail("opened"), raising=False)
    with pytest.raises(ModelFileError, match=r"^big\.json: 1,073,741,824 bytes, more than a gradcheck"):
        gradcheck.read_result(big)
