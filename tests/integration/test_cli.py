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
    (["--bogus"], "unknown option '--bogus'"),
    (["--simulate"], "option '--simulate' needs a value"),
    (["frobnicate"], "unknown command 'frobnicate'"),
    (["help", "frobnicate"], "unknown command 'frobnicate'"),
    (["help", "cdi", "generate", "extra"], "help takes a command and at most one action"),
    (["version", "extra"], "gpulet version: unexpected argument 'extra'"),
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
