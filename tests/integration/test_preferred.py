"""GetPreferredAllocation for whole GPUs, exhaustively: on each node, every
subset of available GPUs × every size × no, one or two must-include GPUs,
asked through the Python kubelet and checked against a statement of
NVIDIA's best-effort policy (as NVIDIA's k8s-device-plugin documents
it) written here, independently of gpulet's C.

Pair scores come from the node file as the reference defines them (PCIe
relation + 100 per direct NVLink). gpulet also counts NVLinks through an
NVSwitch; that adds the same to every pair, which changes no ranking.
"""
import itertools
import json
import random
import subprocess

import pytest

from conftest import NODES, load_node
from test_device_plugin import kubelet, protos, run_gpulet  # noqa: F401 (fixtures)

PCIE = {"internal": 60, "single": 50, "multiple": 40, "hostbridge": 30, "node": 20,
        "system": 10}
BATCH = 100  # container requests per call: a few ms, well inside gpulet's 250 ms per call


def pair_scores(node):
    n = load_node(node)
    count, topo = len(n["gpus"]), n.get("topology", {})
    pcie = [[topo.get("pcie_default", "system")] * count for _ in range(count)]
    score = [[0] * count for _ in range(count)]
    for a, b in itertools.permutations(range(count), 2):
        for entry in topo.get("pcie", []):
            if any(a in g and b in g for g in entry["groups"]) and \
                    PCIE[entry["level"]] > PCIE[pcie[a][b]]:
                pcie[a][b] = entry["level"]
        links = sum(c for x, y, c in topo.get("nvlinks", []) if {x, y} == {a, b})
        score[a][b] = PCIE[pcie[a][b]] + 100 * links
    return pcie, score


class Policy:
    """The best-effort policy over bit masks of GPU indexes.

    Pad the available GPUs with empty slots to a multiple of the size; of
    the partitions into sets of the size that keep all padding in one set
    (the remainder: n mod size real GPUs) and have a set without padding
    that holds every must-include GPU, take the best total; answer the best
    such set. Returns the answer's score, the best any order of enumeration
    can give, or None for no answer."""

    def __init__(self, score):
        self.count = len(score)
        self.set_score = [sum(score[a][b] for a, b in itertools.combinations(self.bits(m), 2))
                          for m in range(1 << self.count)]
        self.full = {}  # (mask, size) -> best total of splitting mask into full sets

    @staticmethod
    def bits(mask):
        return [i for i in range(mask.bit_length()) if mask >> i & 1]

    def best_split(self, mask, size):
        if mask == 0:
            return 0
        key = (mask, size)
        if key not in self.full:
            first, rest = self.bits(mask)[0], self.bits(mask)[1:]
            best = None
            for others in itertools.combinations(rest, size - 1):
                s = (1 << first) | sum(1 << i for i in others)
                total = self.set_score[s] + self.best_split(mask & ~s, size)
                best = total if best is None else max(best, total)
            self.full[key] = best
        return self.full[key]

    def answer(self, avail, must, size):
        n, n_must = bin(avail).count("1"), bin(must).count("1")
        if size < 1 or size > n or must & ~avail or n_must > size:
            return None
        best = None
        for rem in itertools.combinations(self.bits(avail & ~must), n % size):
            r = sum(1 << i for i in rem)
            free = self.bits(avail & ~r & ~must)
            for extra in itertools.combinations(free, size - n_must):
                a = must | sum(1 << i for i in extra)
                total = self.set_score[r] + self.set_score[a] + \
                    self.best_split(avail & ~r & ~a, size)
                if best is None or (total, self.set_score[a]) > best:
                    best = (total, self.set_score[a])
        return best and best[1]


def cases(count):
    """(available, must, size) as lists of indexes: every subset, every size
    (and one more), no / one / two must-include GPUs, and a must-include GPU
    that is not available."""
    for n in range(1, count + 1):
        for avail in itertools.combinations(range(count), n):
            musts = [()] + [(m,) for m in avail] + list(itertools.combinations(avail, 2))
            for size in range(1, n + 2):
                for must in musts:
                    yield list(avail), list(must), size
            missing = [g for g in range(count) if g not in avail]
            if missing:
                yield list(avail), [missing[0]], 1


def ask(kubelet, dp, requests):
    answers = []
    for i in range(0, len(requests), BATCH):
        req = dp.PreferredAllocationRequest(container_requests=[
            dp.ContainerPreferredAllocationRequest(available_deviceIDs=a, must_include_deviceIDs=m,
                                                   allocation_size=s)
            for a, m, s in requests[i:i + BATCH]])
        resp = kubelet.resources["nvidia.com/gpu"].stub.GetPreferredAllocation(req, timeout=30)
        assert len(resp.container_responses) == len(req.container_requests)
        answers += [list(r.deviceIDs) for r in resp.container_responses]
    return answers


@pytest.mark.parametrize("node", ["dgx1-v100", "dgx-a100", "t4-pcie"])
def test_preferred_allocation_follows_the_policy_everywhere(run_gpulet, kubelet, protos,
                                                            build, node):
    pcie, score = pair_scores(node)
    # The node file as read here is the topology gpulet sees.
    info = json.loads(subprocess.run([str(build / "gpulet"), "--simulate", str(NODES / f"{node}.yaml"),
                                      "info", "--json"], capture_output=True, text=True,
                                     check=True).stdout)
    for link in info["topology"]:
        assert link["pcie"].lower() == pcie[link["a"]][link["b"]], link

    uuids = [g["uuid"] for g in load_node(node)["gpus"]]
    index = {u: i for i, u in enumerate(uuids)}
    policy = Policy(score)
    all_cases = list(cases(len(uuids)))
    rng = random.Random(13)
    requests, shuffled = [], []
    for avail, must, size in all_cases:
        requests.append(([uuids[i] for i in avail], [uuids[i] for i in must], size))
        a, m = [uuids[i] for i in avail], [uuids[i] for i in must]
        rng.shuffle(a)
        rng.shuffle(m)
        shuffled.append((a, m, size))

    run_gpulet(node)
    kubelet.resource("nvidia.com/gpu")
    dp = protos[0]
    answers, answers_shuffled = ask(kubelet, dp, requests), ask(kubelet, dp, shuffled)

    wrong, answered = [], 0
    for (avail, must, size), got, got_shuffled in zip(all_cases, answers, answers_shuffled):
        want = policy.answer(sum(1 << i for i in avail), sum(1 << i for i in must), size)
        problems = []
        for ids in (got, got_shuffled):
            picked = [index.get(u, -1) for u in ids]
            if want is None:
                if ids:
                    problems.append(f"answered {picked} where the policy has no answer")
                continue
            if not ids:
                problems.append(f"no answer where the policy's scores {want}")
            elif len(set(picked)) != size or not set(picked) <= set(avail):
                problems.append(f"{picked} is not {size} distinct available GPUs")
            elif not set(must) <= set(picked):
                problems.append(f"{picked} lacks a must-include GPU")
            elif policy.set_score[sum(1 << i for i in picked)] < want:
                problems.append(f"{picked} scores {policy.set_score[sum(1 << i for i in picked)]}"
                                f" < the policy's {want}")
        if want is not None and not problems:
            answered += 1
            if sorted(got) != sorted(got_shuffled) and \
                    policy.set_score[sum(1 << index[u] for u in got)] != \
                    policy.set_score[sum(1 << index[u] for u in got_shuffled)]:
                problems.append(f"shuffled, {got_shuffled} scores differently from {got}")
        if problems:
            wrong.append(f"available {avail} must {must} size {size}: {'; '.join(problems)}")
    assert not wrong, f"{len(wrong)} of {len(all_cases)} wrong, e.g.\n" + "\n".join(wrong[:20])
    # The enumeration is what the issue counted (about 12,000 per 8-GPU node).
    assert len(all_cases) > (12000 if len(uuids) == 8 else 100)
    assert answered > len(all_cases) // 2
