"""`needletrack simulate` writes the data set folder format; bad input exits 2 with one line."""
import json

import numpy as np
import pytest

from needletrack.cli import main
from needletrack.data.folder import list_sequences, read_sequence


def test_cli_writes_folder_format(tmp_path, capsys):
    out = tmp_path / "sim"
    rc = main(["simulate", str(out), "--sequences", "2", "--frames", "4", "--size", "96x128", "--seed", "3",
               "--preset", "hard", "--no-progress"])
    assert rc == 0
    seqs = list_sequences(out)
    assert len(seqs) == 2
    for p in seqs:
        seq = read_sequence(p)
        assert len(seq) == 4 and seq.mask_paths is not None and len(seq.mask_paths) == 4
        assert seq.frame(0).shape == (96, 128)
        assert seq.meta["fps"] > 0 and seq.meta["source_fps"] == 25
        assert seq.meta["preset"] == "hard" and len(seq.meta["pixel_spacing_mm"]) == 2
        assert len(seq.needle) == 4
        for i, n in enumerate(seq.needle):
            assert n["frame"] == i
            assert n["visible"] == bool(seq.mask(i).any())
    # same arguments, same data; another seed, other data
    out2 = tmp_path / "sim2"
    assert main(["simulate", str(out2), "--sequences", "2", "--frames", "4", "--size", "96x128", "--seed", "3",
                 "--preset", "hard", "--no-progress"]) == 0
    a, b = read_sequence(seqs[1]), read_sequence(list_sequences(out2)[1])
    assert all(np.array_equal(a.frame(i), b.frame(i)) for i in range(4))
    assert json.loads((seqs[1] / "needle.json").read_text()) == b.needle
    out3 = tmp_path / "sim3"
    assert main(["simulate", str(out3), "--sequences", "1", "--frames", "4", "--size", "96x128", "--seed", "4",
                 "--preset", "hard", "--no-progress"]) == 0
    assert not np.array_equal(read_sequence(list_sequences(out3)[0]).frame(0), read_sequence(seqs[0]).frame(0))


@pytest.mark.parametrize("argv, msg", [
    (["--size", "abc"], "invalid size"),
    (["--frames", "0"], "must be >= 1"),
])
def test_cli_bad_arguments(tmp_path, argv, msg, capsys):
    with pytest.raises(SystemExit) as e:
        main(["simulate", str(tmp_path / "o")] + argv)
    assert e.value.code == 2
    assert msg in capsys.readouterr().err


def test_cli_user_errors_exit_2(tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    assert main(["simulate", str(tmp_path / "full"), "--frames", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and str(tmp_path / "full") in err and len(err.strip().splitlines()) == 1
    assert main(["simulate", str(tmp_path / "o"), "--backgrounds", str(tmp_path / "nope"), "--frames", "1"]) == 2
    assert "no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["simulate", str(tmp_path / "o2"), "--backgrounds", str(tmp_path / "empty"), "--frames", "1"]) == 2
    assert "no readable background" in capsys.readouterr().err


def test_cli_with_real_backgrounds(tmp_path, backgrounds_dir):
    out = tmp_path / "real"
    assert main(["simulate", str(out), "--sequences", "1", "--frames", "2", "--size", "96", "--backgrounds",
                 str(backgrounds_dir), "--no-progress"]) == 0
    seq = read_sequence(list_sequences(out)[0])
    assert "real background" in seq.meta["source"]


def test_cli_bench_preset(tmp_path):
    out = tmp_path / "bench"
    assert main(["simulate", str(out), "--sequences", "1", "--frames", "2", "--size", "96", "--seed", "1",
                 "--preset", "bench", "--no-progress"]) == 0
    seq = read_sequence(list_sequences(out)[0])
    assert seq.meta["preset"] == "bench" and len(seq) == 2
