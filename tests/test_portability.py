"""What differs on macOS and Windows, emulated on Linux: a missing start method, module or
function, another sys.platform, another console encoding."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import hanclf.io
import hanclf.workers


def test_a_windows_worker_watches_its_main_process_without_os_kill(monkeypatch):
    # On Windows os.kill(pid, 0) sends CTRL_C_EVENT (0) to the console: the probe once a second
    # would interrupt the main process, and a dead one raised OSError, never ProcessLookupError.
    kills, exits = [], []
    main_is_gone = threading.Event()

    class Parent:  # what multiprocessing.parent_process() is in a spawned worker
        pid = os.getpid()

        def join(self, timeout=None):
            main_is_gone.wait(5)

    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setattr(hanclf.workers.signal, "signal", lambda *args: None)
    monkeypatch.setattr(hanclf.workers.multiprocessing, "parent_process", Parent)
    monkeypatch.setattr(os, "kill", lambda pid, sig: kills.append((pid, sig)))
    monkeypatch.setattr(os, "_exit", exits.append)
    hanclf.workers.become_worker(os.getpid())
    time.sleep(1.5)  # the POSIX watch probes every second
    main_is_gone.set()
    for _ in range(50):
        if exits:
            break
        time.sleep(0.1)
    assert (kills, exits) == ([], [1])


SPAWNED_WORKER_SCRIPT = """
import multiprocessing, os, signal, sys, time

def worker(main_pid):
    import multiprocessing.connection  # its wait() is chosen for this platform on import
    from hanclf.workers import become_worker
    sys.platform = "win32"
    def no_probe(pid, sig):
        raise OSError(87, "The parameter is incorrect")  # what Windows says of a dead pid
    os.kill = no_probe
    become_worker(main_pid)
    time.sleep(60)

if __name__ == "__main__":
    process = multiprocessing.get_context("spawn").Process(target=worker, args=(os.getpid(),))
    process.start()
    print(process.pid, flush=True)
    time.sleep(3)  # the worker has started and watches
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer, or closing the console
"""


def test_a_spawned_worker_ends_when_its_main_process_is_killed(tmp_path):
    script = tmp_path / "main.py"
    script.write_text(SPAWNED_WORKER_SCRIPT)
    run = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    worker = int(run.stdout.readline())
    run.wait(timeout=60)
    for _ in range(50):
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        os.kill(worker, 9)
        raise AssertionError("the worker outlived its main process by 5 s")
    assert "Traceback" not in run.stderr.read()


def test_a_spawned_predict_worker_ignores_ctrl_c_before_it_imports_torch(model_dir, tmp_path, monkeypatch):
    # A spawned worker (Windows) unpickles its initializer, importing that function's module,
    # before calling it: with the initializer in hanclf.predict, a Ctrl-C during the seconds of
    # importing torch printed a KeyboardInterrupt traceback from every worker.
    import pickle

    import pandas as pd

    import hanclf.predict
    import hanclf.worker_pool

    class Started(Exception):
        pass

    def pool(processes, mp_context, initializer, initargs):
        raise Started(pickle.dumps((initializer, initargs)))

    monkeypatch.setattr(hanclf.worker_pool, "ProcessPoolExecutor", pool)
    monkeypatch.setattr(hanclf.worker_pool, "start_server", lambda: None)
    data = tmp_path / "texts.csv"
    pd.DataFrame({"text": ["The food was wonderful!"] * 3}).to_csv(data, index=False)
    try:
        hanclf.predict.predict_file(model_dir, data, tmp_path / "p.parquet", device="cpu", devices=2)
    except Started as started:
        pickled = started.args[0]
    # As a worker spawned from a terminal starts (a test run in the background of a script
    # inherits Ctrl-C ignored, which Python then leaves so).
    check = ("import pickle, signal, sys\n"
             "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
             "initializer, initargs = pickle.loads(sys.stdin.buffer.read())\n"
             "print('torch' in sys.modules)\n"
             "import hanclf.workers\n"
             "hanclf.workers.become_worker = lambda pid: print(signal.getsignal(signal.SIGINT), 'torch' in sys.modules)\n"
             "initializer(*initargs)\n"
             "print('torch' in sys.modules)\n")
    run = subprocess.run([sys.executable, "-c", check], input=pickled, capture_output=True, timeout=120)
    assert run.returncode == 0, run.stderr.decode()
    assert run.stdout.decode().split("\n") == ["False", "<built-in function default_int_handler> False", "True", ""]


def test_train_tokenizes_in_its_own_process_on_macos(monkeypatch):
    # macOS lists fork among its start methods, but forking this process (which runs threads of
    # pyarrow and torch by then) is unsafe there: its children may crash or hang.
    import multiprocessing

    import hanclf.data
    from hanclf.config import DataConfig

    def no_fork(method=None):
        raise AssertionError(f"a process pool was started ({method})")

    texts = ["Good food. Bad service!"] * 40
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.setattr(multiprocessing, "get_context", no_fork)
    monkeypatch.setattr(hanclf.data, "MIN_TEXTS_PER_PROCESS", 10)
    monkeypatch.setattr(hanclf.data, "TEXTS_PER_TASK", 10)
    monkeypatch.setattr(hanclf.data, "cores", lambda: 2)
    parts = hanclf.data.tokenize_in_parallel(texts, DataConfig())
    assert [len(part.lengths) for part in parts] == [20] * 4  # 10 texts of 2 sentences each
    assert sorted(parts[0].words) == ["!", ".", "bad", "food", "good", "service"]


def test_tables_print_to_a_file_in_windows_ansi_code_page(model_dir, data_dir, tmp_path):
    # `hanclf explain ... > log.txt` on Windows: stdout is cp1252, which has no arrows (the
    # faithfulness table's ↑) nor most scripts (labels, --top-sentences' texts).
    out = tmp_path / "f.json"
    env = {**os.environ, "PYTHONIOENCODING": "cp1252"}
    run = subprocess.run([sys.executable, "-m", "hanclf", "explain", str(model_dir), str(data_dir / "test.parquet"),
                          "--faithfulness", str(out), "--limit", "6"], capture_output=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr.decode("cp1252")
    assert "comprehensiveness@1 \\u2191" in run.stdout.decode("cp1252")
    assert run.stderr.decode("cp1252").strip().endswith(f"wrote {out}")


def test_an_output_another_program_holds_open_is_one_line(model_dir, data_dir, tmp_path, monkeypatch):
    # Windows refuses to replace a file that a program has open (attention.csv in Excel) with
    # PermissionError [WinError 5]: a traceback, after all the work was done.
    from typer.testing import CliRunner

    from hanclf.cli.main import app

    out = tmp_path / "attention.csv"
    out.write_text("the earlier run's\n")
    replace = os.replace

    def open_in_excel(src, dst):
        if os.fspath(dst) == os.fspath(out):
            raise PermissionError(13, "Access is denied", os.fspath(src), None, os.fspath(dst))
        replace(src, dst)

    monkeypatch.setattr(os, "replace", open_in_excel)
    args = ["explain", str(model_dir), str(data_dir / "test.parquet"), "-o", str(out), "--limit", "3", "--force"]
    with monkeypatch.context() as windows:
        windows.setattr(hanclf.io.sys, "platform", "win32")
        result = CliRunner().invoke(app, args)
    assert (result.exit_code, result.output) == (1, (
        f"error: {out}: cannot be replaced (Access is denied); close the programs that have it "
        "open (a spreadsheet, a viewer) and run again\n"))
    assert out.read_text() == "the earlier run's\n" and sorted(tmp_path.iterdir()) == [out]
    # Elsewhere an open file is no reason: another user's file in /tmp (sticky) is, EPERM.
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 1 and "spreadsheet" not in result.output
    assert "another user's file in a directory that protects it (sticky, as /tmp)? write another path" in result.output


def test_resuming_a_finished_model_with_labels_outside_windows_code_page(tmp_path, monkeypatch):
    # metrics.json is written as UTF-8; read in the locale's encoding (cp1252 on Windows), the
    # label 'Ёлка' (bytes D0 81 ...: 0x81 is no cp1252 character) failed `train --resume`.
    from pathlib import Path

    from hanclf.config import load_config
    from hanclf.training import train
    from tests.conftest import make_reviews

    data = tmp_path / "train.csv"
    make_reviews(60).replace({"label": {"pos": "Ёлка", "neg": "理由", "mix": "café"}}).to_csv(data, index=False)
    config = load_config(None, {"model.embed_dim": 8, "model.word_hidden": 4, "model.sent_hidden": 4,
                                "model.word_att_dim": 4, "model.sent_att_dim": 4, "train.max_epochs": 1,
                                "train.accelerator": "cpu", "data.min_count": 1})
    first = train(data, tmp_path / "m", config, progress=False, log=lambda line: None)
    read_text = Path.read_text
    monkeypatch.setattr(Path, "read_text", lambda self, encoding=None, errors=None:
                        read_text(self, encoding or "cp1252", errors))  # Windows' default
    lines = []
    again = train(data, tmp_path / "m", config, resume=True, progress=False, log=lines.append)
    assert again["valid"] == first["valid"] and set(again["valid"]["per_class"]) == {"Ёлка", "理由", "café"}
    assert lines[-1].startswith(f"nothing to resume: {tmp_path / 'm'} holds this run's finished model")


def test_a_workers_death_under_the_windows_command_blames_memory_not_a_script(monkeypatch):
    # pip's hanclf.exe runs a zip whose __main__.py has a file and no package: the CLI was
    # taken for a script, and told to add an `if __name__ == "__main__":` guard.
    import types
    from pathlib import PureWindowsPath

    import hanclf.worker_pool
    from hanclf.worker_pool import worker_died

    exe = r"C:\venv\Scripts\hanclf.exe"
    main = types.SimpleNamespace(__file__=exe + r"\__main__.py", __spec__=types.SimpleNamespace(name="__main__"))
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [exe])
    monkeypatch.setattr(hanclf.worker_pool, "Path", PureWindowsPath)
    assert str(worker_died()).endswith("(its own error, if any, is printed above): out of memory? try fewer --devices")


def test_predict_workers_are_spawned_on_macos(monkeypatch):
    # A fork server's forks copy a process running torch's and pyarrow's threads, which macOS's
    # system libraries do not survive reliably.
    from hanclf.workers import context

    if sys.platform == "linux":
        assert context().get_start_method() == "forkserver"
    monkeypatch.setattr(sys, "platform", "darwin")
    assert context().get_start_method() == "spawn"
