"""The command line: help, version, usage errors."""
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


@pytest.mark.parametrize("args,message", [
    (["--bogus"], "unknown option '--bogus'"),
    (["--simulate"], "option '--simulate' needs a value"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["help", "frobnicate"], "unknown command 'frobnicate'"),
    (["--log-level", "loud", "info"], "--log-level must be debug, info, warn or error"),
    (["--simulate", "dgx-a100", "info", "--yaml"], "unknown option '--yaml'"),
    (["--simulate", "dgx-a100", "info", "extra"], "unexpected argument 'extra'"),
    (["--simulate", "dgx-a100", "--nvml-lib", "/x.so", "info"], "cannot be used together"),
    (["--simulate", "dgx-a200", "info"], "no simulated node named \"dgx-a200\" (known: "),
    (["--simulate", "/nonexistent/node.yaml", "info"], "cannot read the node description"),
    # every subcommand names the option the same way, and shows its usage
    (["run", "--bogus"], "gpulet run: unknown option '--bogus'\nUsage: gpulet"),
    (["run", "--config-file"], "gpulet run: option '--config-file' needs a value\nUsage:"),
    (["labels", "--mig-strategy"], "gpulet labels: option '--mig-strategy' needs a value\n"),
    (["doctor", "--cdi-dirs"], "gpulet doctor: option '--cdi-dirs' needs a value\nUsage:"),
    (["info", "-x"], "gpulet info: unknown option '-x'\nUsage:"),
    (["cdi", "generate", "--output"], "gpulet cdi generate: option '--output' needs a value\n"),
    (["runtime", "configure", "--runtime"],
     "gpulet runtime configure: option '--runtime' needs a value\nUsage:"),
    (["runtime", "install", "--bogus"], "gpulet runtime install: unknown option '--bogus'\n"),
])
def test_usage_errors_exit_2(gpulet, args, message):
    r = gpulet(*args)
    assert r.rc == 2
    assert message in r.err
    assert r.out == ""


def test_no_command_prints_usage_and_exits_2(gpulet):
    r = gpulet()
    assert r.rc == 2
    assert "Usage: gpulet" in r.err
