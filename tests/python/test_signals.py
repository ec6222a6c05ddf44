"""A real Ctrl-C: the command line run as its own process and sent SIGINT the way a terminal sends it (to the
whole foreground process group), in the middle of its work. It must end with status 130 and a one-line
'interrupted', leave no partial output or temporary file and no ffmpeg process behind, and a training run
must keep a checkpoint from which the same command finishes with the weights of an uninterrupted run.
POSIX only (signals and process groups)."""
from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

import magmasr
from magmasr import cli

pytestmark = pytest.mark.skipif(os.name != "posix", reason="needs POSIX signals and process groups")

PACKAGE_ROOT = str(Path(magmasr.__file__).resolve().parents[1])


def start(*args, cwd: Path) -> subprocess.Popen:
    """`magmasr ARGS` in a new session (its own process group, as a shell job is), stderr piped."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (PACKAGE_ROOT, env.get("PYTHONPATH")) if p)
    code = "import sys; from magmasr.cli import main; sys.exit(main(sys.argv[1:]))"
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], cwd=cwd, env=env,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def read_until(proc: subprocess.Popen, text: str, timeout: float = 120.0) -> str:
    """What the process wrote on stderr up to and including `text` (it fails if the process ends first)."""
    buf, deadline = b"", time.monotonic() + timeout
    while text.encode() not in buf:
        left = deadline - time.monotonic()
        ready, _, _ = select.select([proc.stderr], [], [], max(left, 0))
        chunk = os.read(proc.stderr.fileno(), 65536) if ready else None
        if not chunk:
            proc.kill()
            proc.wait()
            pytest.fail(f"{'timed out' if chunk is None else 'the process ended'} before writing {text!r}; "
                        f"stderr: {buf.decode(errors='replace')[-2000:]}")
        buf += chunk
    return buf.decode(errors="replace")


def send(proc: subprocess.Popen, seen: str, signum: int = signal.SIGINT) -> tuple[int, str]:
    """Sends `signum` to the process group (SIGINT: as a terminal's Ctrl-C); the exit status and all of stderr."""
    os.killpg(proc.pid, signum)
    try:
        _, rest = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail(f"the command did not end within 120 s of signal {signum}")
    return proc.returncode, seen + rest.decode(errors="replace")


def processes_naming(folder: Path) -> list[str]:
    """The command lines of live processes that name a file in `folder` (an ffmpeg left reading or writing)."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(folder) in cmd:
            found.append(cmd)
    return found


SIGNALS = {"ctrl-c": (signal.SIGINT, 130, "magmasr: interrupted"),
           "sigterm": (signal.SIGTERM, 143, "magmasr: terminated")}


def assert_stopped(code: int, err: str, how: str) -> None:
    _, status, last = SIGNALS[how]
    assert code == status, err[-2000:]
    assert err.splitlines()[-1] == last, err[-2000:]
    assert "Traceback" not in err, err[-2000:]


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
def test_a_stopped_training_saves_its_last_step_and_the_same_command_finishes(tmp_path, how):
    """Stopped half way (no periodic checkpoint due: one every 1,000 steps of 400), the run finishes the step under
    way, saves it to the checkpoint and ends; the same command then resumes from it and ends on the weights of an
    uninterrupted run, bit for bit."""
    from skimage import data

    from magmasr.sr import ImageSR
    from magmasr.train import read_checkpoint

    folder = tmp_path / "pics"
    folder.mkdir()
    iio.imwrite(folder / "cam.png", data.camera()[:100, :100])
    out, ck = tmp_path / "m.safetensors", tmp_path / "ck.safetensors"
    steps = 400
    args = ["train", folder, "--arch", "9-1-5", "--scale", "3", "--steps", steps, "--batch", "8", "--seed", "5",
            "--device", "cpu", "--checkpoint", ck, "--checkpoint-every", "1000", "-o", out]
    proc = start(*args, cwd=tmp_path)
    code, err = send(proc, read_until(proc, f"step 20/{steps}"), SIGNALS[how][0])
    assert_stopped(code, err, how)
    lines = err.splitlines()
    assert f"stopping after this step, to save it in {ck} (Ctrl-C again to stop at once)" in lines
    cut = int(read_checkpoint(ck)[1]["step"])
    assert lines[-2] == f"stopped after step {cut}/{steps}; {ck} keeps it, and the same call (or command) resumes " \
                        "from there"
    assert not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck.safetensors", "pics"]  # no temporary file
    assert 20 <= cut < steps, cut  # step 20 or the one under way when the signal came
    if how == "sigterm":
        return  # the resume is the same for both
    assert cli.main([str(a) for a in args]) == 0
    whole = tmp_path / "whole.safetensors"
    assert cli.main([str(a) for a in args[:-4] + ["-o", whole]]) == 0
    a, b = ImageSR.load(out).net.state_dict(), ImageSR.load(whole).net.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


@pytest.mark.parametrize("how", ["ctrl-c", "sigterm"])
@pytest.mark.parametrize("model", ["3dsrnet", "bicubic"])
def test_a_stopped_video_upscale_leaves_nothing_behind(tmp_path, make_clip, model, how):
    from magmasr.video import VideoSR

    src = make_clip(tmp_path / "clip.mp4", size="64x48", rate=25, seconds=40, audio=True)
    extra = []
    if model == "3dsrnet":
        weights = tmp_path / "v.safetensors"
        VideoSR.tdsrnet(2, filters=16).save(weights)
        extra = ["--weights", weights]
    before = sorted(tmp_path.iterdir())
    out = tmp_path / "clip_x2.mp4"
    proc = start("upscale", src, "--model", model, *extra, "--scale", "2", "--device", "cpu", "-o", out, cwd=tmp_path)
    code, err = send(proc, read_until(proc, "/1000 frames"), SIGNALS[how][0])  # 40 s at 25 frames/s
    assert_stopped(code, err, how)
    assert sorted(tmp_path.iterdir()) == before  # no output, no temporary file
    deadline = time.monotonic() + 10  # an ffmpeg that was killed may take a moment to be reaped
    while processes_naming(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(tmp_path) == []


def test_deferred_interrupts_note_the_first_signal_and_raise_the_second():
    from magmasr._signals import Terminated, deferred_interrupts, sigterm_raises

    handlers = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    for first, second, exc in ((signal.SIGINT, signal.SIGINT, KeyboardInterrupt),
                               (signal.SIGTERM, signal.SIGINT, KeyboardInterrupt),
                               (signal.SIGINT, signal.SIGTERM, Terminated)):
        with deferred_interrupts() as pending:
            assert not pending
            pending.raise_if_any()  # nothing yet
            os.kill(os.getpid(), first)
            time.sleep(0.01)  # the handler runs between two bytecodes of this thread
            assert pending.signum == first
            with pytest.raises(exc) as caught:
                os.kill(os.getpid(), second)
                time.sleep(1)  # interrupted long before it ends
            assert type(caught.value) is exc
        with pytest.raises(Terminated if first == signal.SIGTERM else KeyboardInterrupt) as caught:
            pending.raise_if_any()
        assert isinstance(caught.value, KeyboardInterrupt)
        assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == handlers
    with sigterm_raises():
        with pytest.raises(Terminated):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) == handlers[1]


@pytest.mark.parametrize("failure", ["ctrl-c", "error, then ctrl-c while ffmpeg finishes"])
def test_an_interrupted_video_stops_ffmpeg_and_removes_the_partial_file(tmp_path, make_clip, monkeypatch, capsys,
                                                                       failure):
    """In-process, with the writer replaced by one that records how it was ended: after a Ctrl-C it gets the
    interrupt (imageio-ffmpeg then kills its ffmpeg instead of waiting for it to finish a file that is about to
    be deleted); after another failure it is closed, and a Ctrl-C while it finishes still removes the partial
    file. The reader's ffmpeg is stopped too, although this process lives on."""
    import imageio_ffmpeg

    src = make_clip(tmp_path / "clip.mp4", size="32x24", rate=25, seconds=20)
    ended = []

    def write_frames(path, *a, **k):
        Path(path).write_bytes(b"the first frames")
        try:
            while True:
                yield
        except GeneratorExit:
            ended.append("closed")
            if failure != "ctrl-c":
                raise KeyboardInterrupt from None  # the user's Ctrl-C while ffmpeg would finish the file
        except KeyboardInterrupt:
            ended.append("interrupted")
            raise

    real, calls = cli.upscale_array, []

    def upscale_array(*a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt if failure == "ctrl-c" else RuntimeError("out of memory")
        return real(*a, **k)

    monkeypatch.setattr(imageio_ffmpeg, "write_frames", write_frames)
    monkeypatch.setattr(cli, "upscale_array", upscale_array)
    before = sorted(tmp_path.iterdir())
    assert cli.main(["upscale", str(src), "--model", "bicubic", "--scale", "2", "--device", "cpu"]) == 130
    assert capsys.readouterr().err.splitlines()[-1] == "magmasr: interrupted"
    assert ended == (["interrupted"] if failure == "ctrl-c" else ["closed"])
    assert sorted(tmp_path.iterdir()) == before
    deadline = time.monotonic() + 10
    while processes_naming(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert processes_naming(tmp_path) == []
