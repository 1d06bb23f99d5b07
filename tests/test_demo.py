"""`needletrack demo`: simulate, track, write the overlay, print metrics against the simulator's truth."""
import json

from needletrack.cli import main


def test_demo_with_a_given_model(tmp_path, capsys):
    from needletrack.models import build_model, save_model

    w = save_model(build_model("stnan_tiny"), tmp_path / "tiny.safetensors")
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "6", "--size", "64", "--model", str(w), "--quiet"]) == 0
    text = capsys.readouterr()
    assert "IoU" in text.out and "tip error" in text.out and "WARNING" not in text.err
    s = json.loads((out / "summary.json").read_text())
    assert s["frames"] == 6 and s["width"] == 64 and s["metrics"]["frames"] == 5     # first frame unscored
    assert (out / "overlay.mp4").stat().st_size > 0
    assert len(list((out / "masks").glob("*.png"))) == 6
    assert len(list((out / "sample" / "frames").glob("*.png"))) == 6
    assert (out / "sample" / "needle.json").exists()
    # a second run replaces the sample rather than mixing two
    assert main(["demo", "--out", str(out), "--frames", "4", "--size", "64", "--model", str(w), "--quiet"]) == 0
    assert len(list((out / "sample" / "frames").glob("*.png"))) == 4
    assert len(list((out / "masks").glob("*.png"))) == 4


def test_demo_falls_back_loudly_without_shipped_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("NEEDLETRACK_WEIGHTS_DIR", str(tmp_path / "no_weights"))
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--frames", "3", "--size", "64", "--quiet"]) == 0
    text = capsys.readouterr()
    assert "WARNING" in text.err and "UNTRAINED" in text.err and len(text.err.strip().splitlines()) == 1
    assert "stnan_fast (untrained)" in text.out
    assert json.loads((out / "summary.json").read_text())["model"] == "stnan_fast (untrained)"


def test_demo_bad_arguments(tmp_path, capsys):
    assert main(["demo", "--out", str(tmp_path), "--frames", "1"]) == 2
    assert "--frames" in capsys.readouterr().err
    monkey_missing = main(["demo", "--out", str(tmp_path), "--model", str(tmp_path / "nope.safetensors"),
                           "--frames", "3", "--size", "64"])
    assert monkey_missing == 2 and "not found" in capsys.readouterr().err
