"""What a build may still take: the least of the machine's free memory, its cgroup's
room and its address-space limit (a CI container's limit, not the host's free memory)."""

import subprocess
import sys

from deploycomp import memory

GB = 1 << 30


def _v2(tmp_path, limit: str, current: int, inactive: int = 0, nested: str = ""):
    root = tmp_path / "cgroup"
    own = root / nested if nested else root
    own.mkdir(parents=True, exist_ok=True)
    (root / "cgroup.controllers").write_text("cpu memory\n")
    (own / "memory.max").write_text(limit + "\n")
    (own / "memory.current").write_text(f"{current}\n")
    (own / "memory.stat").write_text(f"anon {current - inactive}\ninactive_file {inactive}\n")
    proc = tmp_path / "proc_cgroup"
    proc.write_text(f"0::/{nested}\n")
    return proc, root


def test_a_cgroup_v2_limit_leaves_its_limit_less_what_is_used_and_not_reclaimable(tmp_path):
    proc, root = _v2(tmp_path, str(4 * GB), 3 * GB, inactive=GB)  # 1 GB of it page cache
    assert memory.cgroup_headroom(proc, root) == 2 * GB


def test_no_cgroup_limit_is_no_answer(tmp_path):
    proc, root = _v2(tmp_path, "max", 3 * GB)
    assert memory.cgroup_headroom(proc, root) is None
    assert memory.cgroup_headroom(tmp_path / "missing", root) is None


def test_a_limit_on_a_parent_cgroup_bounds_its_children(tmp_path):
    """A pod's limit sits above its container's cgroup: the least of them counts."""
    proc, root = _v2(tmp_path, "max", GB, nested="pod/ctr")
    (root / "pod" / "memory.max").write_text(f"{3 * GB}\n")
    (root / "pod" / "memory.current").write_text(f"{2 * GB}\n")
    assert memory.cgroup_headroom(proc, root) == GB


def test_a_container_sees_its_cgroup_at_the_mounts_root(tmp_path):
    """/proc/self/cgroup names the host's path, which the container's mount does not hold."""
    proc, root = _v2(tmp_path, str(2 * GB), GB // 2)
    proc.write_text("0::/system.slice/docker-abc.scope\n")
    assert memory.cgroup_headroom(proc, root) == GB + GB // 2
    job = root / "job"  # a limited child of the container's cgroup, named from the host's root
    job.mkdir()
    (job / "memory.max").write_text(f"{GB}\n")
    (job / "memory.current").write_text(f"{GB // 4}\n")
    proc.write_text("0::/system.slice/docker-abc.scope/job\n")
    assert memory.cgroup_headroom(proc, root) == GB - GB // 4


def test_cgroup_v1_with_its_no_limit_number(tmp_path):
    root = tmp_path / "cgroup"
    mem = root / "memory"
    mem.mkdir(parents=True)
    proc = tmp_path / "proc_cgroup"
    proc.write_text("4:memory:/process_api/abc\n1:cpu:/\n")
    (mem / "memory.limit_in_bytes").write_text("9223372036854771712\n")  # v1's "unlimited"
    (mem / "memory.usage_in_bytes").write_text(f"{12 * GB}\n")
    assert memory.cgroup_headroom(proc, root) is None
    (mem / "memory.limit_in_bytes").write_text(f"{8 * GB}\n")
    (mem / "memory.stat").write_text(f"cache {5 * GB}\ntotal_inactive_file {5 * GB}\n")
    assert memory.cgroup_headroom(proc, root) == GB


def test_available_memory_is_the_least_of_what_bounds_it(monkeypatch):
    monkeypatch.setattr(memory, "_meminfo_available", lambda: 20 * GB)
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: 3 * GB)
    monkeypatch.setattr(memory, "address_space_headroom", lambda: None)
    assert memory.available_bytes() == 3 * GB
    monkeypatch.setattr(memory, "cgroup_headroom", lambda: None)
    assert memory.available_bytes() == 20 * GB
    monkeypatch.setattr(memory, "_meminfo_available", lambda: None)
    assert memory.available_bytes() is None


def test_ulimit_v_bounds_what_a_process_may_still_take():
    """Measured in a child under ``ulimit -v``: its limit less the address space it holds."""
    code = ("import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30)); "
            "from deploycomp import memory; h = memory.address_space_headroom(); "
            "print(h, memory.available_bytes())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    headroom, available = int(out[0]), int(out[1])
    assert 0 < headroom < 3 * GB and available <= headroom
    assert memory.address_space_headroom() is None or memory.address_space_headroom() > 3 * GB
