"""The command line: help, version, usage errors."""
import os

import pytest

from conftest import FIXTURES


def test_version(gpulet):
    for args in (["--version"], ["-V"], ["version"]):
        r = gpulet(*args)
        assert r.rc == 0
        assert r.out.startswith("gpulet 0.")


def test_help_lists_commands_and_fixtures(gpulet):
    r = gpulet("--help")
    assert r.rc == 0
    assert "info" in r.out and "--simulate NAME|FILE" in r.out
    assert ", ".join(FIXTURES) in r.out
    r = gpulet("help", "info")
    assert r.rc == 0
    assert "--json" in r.out
    r = gpulet("info", "--help")
    assert r.rc == 0
    assert "Usage: gpulet [--simulate NAME|FILE] info [--json]" in r.out


def commands(gpulet):
    """Every command `gpulet --help` lists, read from its Commands section."""
    out = gpulet("--help").out
    section = out.split("Commands:\n")[1].split("\n\n")[0]
    names = [line.split()[0] for line in section.splitlines() if line.startswith("  ") and
             not line.startswith("   ")]
    return names


def test_the_help_lists_every_command(gpulet):
    assert commands(gpulet) == ["info", "run", "labels", "cdi", "runtime", "doctor", "version",
                                "help"]


def test_help_x_is_x_help_for_every_command(gpulet):
    words = [[c] for c in commands(gpulet)]
    words += [["cdi", "generate"], ["runtime", "configure"], ["runtime", "install"]]
    for w in words:
        via_help = gpulet("help", *w)
        direct = gpulet(*w, "--help")
        assert (via_help.rc, via_help.out, via_help.err) == (direct.rc, direct.out, direct.err), w
        assert direct.rc == 0 and direct.err == "", (w, direct.err)
        assert "Usage: gpulet" in direct.out, w
        assert gpulet(*w, "-h").out == direct.out, w
    assert gpulet("help", "run").out.startswith("Usage: gpulet [GLOBAL OPTIONS] run")
    assert gpulet("help", "help").out == gpulet("--help").out == gpulet("help").out


def test_runtime_help_names_every_engine(gpulet):
    out = gpulet("runtime", "--help").out
    line = next(l for l in out.splitlines() if l.strip().startswith("--runtime ENGINE"))
    rest = out.split(line)[1].split("\n  --")[0]
    for engine in ("containerd", "docker", "crio"):
        assert engine in line + rest, engine


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "gpulet: unknown option '--bogus'"),
    (["--simulate"], "gpulet: option '--simulate' needs a value"),
    (["frobnicate"], "gpulet: unknown command 'frobnicate'"),
    (["help", "frobnicate"], "gpulet: unknown command 'frobnicate'"),
    (["help", "cdi", "generate", "extra"], "help takes a command and at most one action"),
    (["--log-level", "loud", "info"], "--log-level must be debug, info, warn or error"),
    (["--simulate", "dgx-a100", "--nvml-lib", "/x.so", "info"], "cannot be used together"),
    (["--simulate", "dgx-a200", "info"], "no simulated node named \"dgx-a200\" (known: "),
])
def test_usage_errors_exit_2(gpulet, args, message):
    r = gpulet(*args)
    assert r.rc == 2
    assert message in r.err
    assert r.out == ""


# Every command names the option the same way, then points to its own help
# in one line: the error stays on screen, not 50 lines of help above it.
@pytest.mark.parametrize("args,command,message", [
    (["version", "extra"], "version", "unexpected argument 'extra'"),
    (["--simulate", "dgx-a100", "info", "--yaml"], "info", "unknown option '--yaml'"),
    (["--simulate", "dgx-a100", "info", "extra"], "info", "unexpected argument 'extra'"),
    (["run", "--bogus"], "run", "unknown option '--bogus'"),
    (["run", "--config-file"], "run", "option '--config-file' needs a value"),
    (["run", "extra"], "run", "unexpected argument 'extra'"),
    (["labels", "--mig-strategy"], "labels", "option '--mig-strategy' needs a value"),
    (["labels", "extra"], "labels", "unexpected argument 'extra'"),
    (["doctor", "--cdi-dirs"], "doctor", "option '--cdi-dirs' needs a value"),
    (["info", "-x"], "info", "unknown option '-x'"),
    (["cdi"], "cdi", "which action? (generate)"),
    (["cdi", "make"], "cdi", "unknown action 'make' (generate)"),
    (["cdi", "generate", "--output"], "cdi generate", "option '--output' needs a value"),
    (["runtime"], "runtime", "which action? (configure, install)"),
    (["runtime", "setup"], "runtime", "unknown action 'setup' (configure, install)"),
    (["runtime", "configure", "--runtime"], "runtime configure",
     "option '--runtime' needs a value"),
    (["runtime", "configure", "--runtime", "podman"], "runtime configure",
     "--runtime must be docker, crio or containerd"),
    (["runtime", "install", "--bogus"], "runtime install", "unknown option '--bogus'"),
    (["runtime", "install"], "runtime install", "--to DIR is required"),
    (["runtime", "install", "--to", "/x", "extra"], "runtime install",
     "unexpected argument 'extra'"),
])
def test_a_usage_error_is_the_error_and_where_help_is(gpulet, args, command, message):
    r = gpulet(*args)
    assert r.rc == 2 and r.out == ""
    assert r.err == f"gpulet {command}: {message}\nTry 'gpulet {command} --help'.\n"
    assert gpulet(*command.split(), "--help").rc == 0


def test_no_command_is_a_usage_error_in_two_lines(gpulet):
    r = gpulet()
    assert r.rc == 2 and r.out == ""
    assert r.err == ("gpulet: which command? (info, run, labels, cdi, runtime, doctor, version, "
                     "help)\nTry 'gpulet --help'.\n")


def test_help_says_what_run_serves(gpulet):
    line = next(l for l in gpulet("help").out.splitlines() if l.startswith("  run "))
    assert "device plugin" in line and "labels" in line and "metrics" in line
    run = gpulet("help", "run").out
    assert "/metrics" in run.split("\n\n")[1]  # its summary, not only an option


def test_a_missing_node_file_says_why(gpulet, tmp_path):
    r = gpulet("--simulate", tmp_path / "no" / "node.yaml", "info")
    assert r.rc == 2
    assert r.err == (f"gpulet: cannot read the node description {tmp_path}/no/node.yaml (from "
                     "--simulate): No such file or directory\n")
    r = gpulet("--simulate", "node.yaml", "info")
    assert r.rc == 2
    assert f"node.yaml (in {os.getcwd()}) (from --simulate): No such file or directory" in r.err


def test_a_mistyped_state_file_is_an_error(gpulet, tmp_path):
    state = tmp_path / "state.yaml"
    r = gpulet("--simulate", "dgx-a100", "info", env={"GPULET_SIM_STATE": f"{state}x"})
    assert r.rc == 2 and r.out == ""
    assert f"GPULET_SIM_STATE names {state}x, which cannot be read: No such file" in r.err
    r = gpulet("--simulate", "dgx-a100", "info", env={"GPULET_SIM_STATE": tmp_path})
    assert r.rc == 2 and "which is not a file" in r.err
    state.write_text("")  # an empty state changes nothing
    r = gpulet("--simulate", "dgx-a100", "info", env={"GPULET_SIM_STATE": state})
    assert r.rc == 0, r.err
    assert r.out == gpulet("--simulate", "dgx-a100", "info").out
