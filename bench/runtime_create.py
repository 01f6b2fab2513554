"""Added latency of a container start through gpulet-runtime, compared with
plain runc: `run` of a busybox container that exits at once, 100 times
each, on the fake driver root the tests use (one GPU asked for).

    /usr/bin/python3 bench/runtime_create.py [BUILD_DIR] [RUNS]
"""
import json
import os
import pathlib
import shutil
import statistics
import stat
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fake_driver_root(root):
    lib = root / "usr/lib/x86_64-linux-gnu"
    lib.mkdir(parents=True)
    (root / "etc").mkdir()
    src = root / "x.c"
    src.write_text("int gpulet_fake;\n")
    for l in ("libcuda", "libnvidia-ml"):
        subprocess.run(["gcc", "-shared", "-fPIC", f"-Wl,-soname,{l}.so.1", "-o",
                        str(lib / f"{l}.so.550.90.07"), str(src)], check=True)
    (root / "etc/ld.so.conf").write_text("/usr/lib/x86_64-linux-gnu\n")
    subprocess.run([shutil.which("ldconfig") or "/sbin/ldconfig", "-r", str(root)], check=True)
    (root / "dev").mkdir()
    os.mknod(root / "dev/nvidiactl", 0o666 | stat.S_IFCHR, os.makedev(195, 255))
    for m in range(8):
        os.mknod(root / f"dev/nvidia{m}", 0o666 | stat.S_IFCHR, os.makedev(195, m))


def bundle(path, asks_for_gpu):
    rootfs = path / "rootfs" / "bin"
    rootfs.mkdir(parents=True)
    (path / "rootfs" / "etc").mkdir()
    shutil.copy(shutil.which("busybox"), rootfs / "busybox")
    os.symlink("busybox", rootfs / "true")
    runc = shutil.which("runc") or "/usr/sbin/runc"
    subprocess.run([runc, "spec"], cwd=path, check=True)
    config = json.loads((path / "config.json").read_text())
    config["process"]["terminal"] = False
    config["process"]["args"] = ["true"]
    if asks_for_gpu:
        config["process"]["env"].append("NVIDIA_VISIBLE_DEVICES=0")
    return config


def one_run(prefix, path, config, name, env, state):
    (path / "config.json").write_text(json.dumps(config))  # the wrapper edits it
    start = time.perf_counter()
    subprocess.run([*prefix, "--root", str(state), "run", "--bundle", str(path), name],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    return (time.perf_counter() - start) * 1000


def main():
    build = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "build").resolve()
    runs = int(sys.argv[2]) if len(sys.argv) > 2 else 100
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gpulet-create-bench-"))
    driver = tmp / "driver"
    fake_driver_root(driver)
    cdi = tmp / "cdi"
    cdi.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("GPULET_SIM")}
    subprocess.run([str(build / "gpulet"), "--simulate", "dgx-a100", "cdi", "generate",
                    "--driver-root", str(driver), "--no-hook", "--output", str(cdi / "nvidia.yaml")],
                   check=True, env=env)
    runc = shutil.which("runc") or "/usr/sbin/runc"
    env = dict(env, GPULET_CDI_SPEC_DIRS=str(cdi), GPULET_RUNTIME=runc)
    cases = (("runc", [runc], False),
             ("gpulet-runtime, no GPU asked", [str(build / "gpulet-runtime")], False),
             ("gpulet-runtime, one GPU", [str(build / "gpulet-runtime")], True))
    bundles = {}
    for label, _, asks in cases:
        path = tmp / label.replace(" ", "-").replace(",", "")
        bundles[label] = (path, bundle(path, asks))
    # Interleaved, so that the machine's drift hits every case alike.
    results = {label: [] for label, _, _ in cases}
    for i in range(runs):
        for label, prefix, _ in cases:
            path, config = bundles[label]
            results[label].append(one_run(prefix, path, config, f"c{i}-{len(results[label])}-"
                                          f"{abs(hash(label)) % 1000}", env, tmp / "state"))
    base = statistics.median(results["runc"])
    print(f"{'runtime':<32} {'runs':>5} {'median ms':>10} {'added ms':>9}")
    for label, times in results.items():
        med = statistics.median(times)
        print(f"{label:<32} {runs:>5} {med:>10.1f} {med - base:>9.1f}")
    # The wrapper's own work, without runc's noise: a runtime that does nothing.
    path, config = bundles["gpulet-runtime, one GPU"]
    own = [one_run([str(build / "gpulet-runtime"), "--runtime", "/bin/true"], path, config,
                   f"own{i}", env, tmp / "state") for i in range(runs)]
    true_alone = [one_run(["/bin/true"], path, config, f"t{i}", env, tmp / "state")
                  for i in range(runs)]
    print(f"{'wrapper alone (one GPU, vs /bin/true)':<32} {runs:>5} "
          f"{statistics.median(own):>10.2f} {statistics.median(own) - statistics.median(true_alone):>9.2f}")
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
