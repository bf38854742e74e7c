"""Sources: parsing of every host input, edge cases from real bugs in peer tools."""

from __future__ import annotations

import errno
import os
import stat
import struct

import pytest

from nfd_snp import paths
from nfd_snp.host import LiveHost
from nfd_snp.model import Generation, MemEncryptLeaf, TcbLayout, TcbVersion
from nfd_snp.reasons import Reason
from nfd_snp.sources import cpuid, firmware, guests, kernel, kvm, msr, psp
from tests.conftest import need, probe_root

# -- CPUID -------------------------------------------------------------------------------


def test_only_bit0_set_is_sme_not_sev_or_snp():
    # snphost v0.7.0 tested `(eax & 1) << n`, making every feature follow bit 0.
    leaf = MemEncryptLeaf(eax=0x1, ebx=0, ecx=0, edx=0)
    assert leaf.sme
    assert not (leaf.sev or leaf.sev_es or leaf.snp or leaf.vmpl or leaf.secure_tsc)


def test_each_feature_follows_its_own_bit():
    for bit, attr in [(1, "sev"), (3, "sev_es"), (4, "snp"), (5, "vmpl"), (8, "secure_tsc")]:
        leaf = MemEncryptLeaf(eax=1 << bit, ebx=0, ecx=0, edx=0)
        assert getattr(leaf, attr), attr
        assert not leaf.sme


def test_cbit_51_needs_six_bits():
    leaf = MemEncryptLeaf(eax=0x1F, ebx=0x4073, ecx=1006, edx=510)
    assert leaf.cbitpos == 51  # a 5-bit mask would give 19
    assert leaf.reduced_phys_bits == 1 and leaf.vmpl_count == 4
    assert (leaf.sev_asids, leaf.es_asids) == (497, 509)


def test_min_asid_one_means_no_es_asids():
    leaf = MemEncryptLeaf(eax=0xF, ebx=0x6F, ecx=509, edx=1)
    assert leaf.es_asids == 0 and leaf.sev_asids == 509


@pytest.mark.parametrize(
    "eax, expected",
    [
        (0x00A10F11, (0x19, 0x11, 1)),  # Genoa
        (0x00A00F11, (0x19, 0x01, 1)),  # Milan
        (0x00830F10, (0x17, 0x31, 0)),  # Rome
        (0x00B00F21, (0x1A, 0x02, 1)),  # Turin
        (0x000A0671, (0x06, 0xA7, 1)),  # Intel Sapphire Rapids VM (this CI machine's kind)
    ],
)
def test_signature(eax, expected):
    assert cpuid.decode_signature(eax) == expected


@pytest.mark.parametrize(
    "family, model, generation",
    [
        (0x17, 0x01, Generation.NAPLES),
        (0x17, 0x31, Generation.ROME),
        (0x19, 0x01, Generation.MILAN),
        (0x19, 0x11, Generation.GENOA),
        (0x19, 0xA0, Generation.BERGAMO_SIENA),
        (0x19, 0x61, Generation.UNKNOWN),  # EPYC 4004 (AM5)
        (0x1A, 0x02, Generation.TURIN),
        (0x1A, 0x11, Generation.TURIN),
        (0x1A, 0x44, Generation.UNKNOWN),  # EPYC 4005 / Ryzen 9000 silicon
        (0x1A, 0x50, Generation.VENICE),
        (0x15, 0x02, Generation.UNKNOWN),
    ],
)
def test_generation(family, model, generation):
    from nfd_snp.model import generation_of

    assert generation_of(family, model) is generation


def _device_node(path, rdev):
    """A character device node (root only): `rdev` of a real device of this machine."""
    need(os.geteuid() == 0, "device nodes are made by root")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.mknod(path, stat.S_IFCHR | 0o600, rdev)


NULL_DEVICE = os.makedev(1, 3)  # /dev/null: every read is empty, every ioctl ENOTTY


def test_live_cpuid_reads_the_device_at_the_leaf_offset(tmp_path):
    """LiveHost preads at offset = leaf, as /dev/cpu/N/cpuid expects: leaf 0 names the
    vendor /proc/cpuinfo names. A device that gives less than asked is a short read."""
    if not os.path.exists("/dev/cpu/0/cpuid"):
        pytest.skip("no cpuid driver on this machine")
    _device_node(tmp_path / paths.CPUID_DEVICE, os.stat("/dev/cpu/0/cpuid").st_rdev)
    _device_node(tmp_path / paths.MSR_DEVICE, NULL_DEVICE)
    with LiveHost(tmp_path, libvirt=False) as host:
        _max_basic, ebx, ecx, edx = host.cpuid(0)
        max_extended = host.cpuid(0x80000000)[0]
        with pytest.raises(OSError) as short:
            host.msr(0xC0010010)
    with open("/proc/cpuinfo") as cpuinfo:
        vendor = next(line.split(":")[1].strip() for line in cpuinfo if "vendor_id" in line)
    assert cpuid.vendor_string(ebx, ecx, edx) == vendor
    assert 0x80000000 < max_extended < 0x8000FFFF
    assert short.value.errno == errno.EIO


@pytest.mark.parametrize("planted", ["file", "fifo", "symlink-out"])
def test_live_devices_must_be_character_devices(tmp_path, planted):
    """A regular file, a FIFO or a link out of the root where the cpuid, msr, sev and kvm
    devices belong: unreadable at once, with what is there, never opened (a FIFO would block
    the service; a link leaves the root)."""
    for rel in (paths.CPUID_DEVICE, paths.MSR_DEVICE, paths.SEV_DEVICE, paths.KVM_DEVICE):
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if planted == "file":
            path.write_bytes(b"\0" * 64)
        elif planted == "fifo":
            os.mkfifo(path)
        else:
            path.symlink_to("../" * 8 + "dev/null")  # '..' stays at a live root's top
    with LiveHost(tmp_path, libvirt=False) as host:
        cpu = cpuid.read(host)
        msrs = msr.read(host)
        kvm_facts = kvm.read(host)
        sev = psp.read(host, cpu, kernel.read(host), kvm_facts)
    if planted == "symlink-out":  # resolved at the root: tmp_path/dev/null is not there
        assert cpu.unreadable.reason is Reason.CPUID_DEVICE_MISSING
        return
    kind = "a regular file" if planted == "file" else "a FIFO"
    assert cpu.unreadable.detail.endswith(f"{kind}, not a character device")
    assert msrs.unreadable.detail.endswith(f"{kind}, not a character device")
    assert sev.sev is None and sev.sev_unreadable.errno == errno.ENODEV
    assert kvm_facts.snp_policy_bits is None
    assert kvm_facts.snp_policy_bits_unreadable.detail.endswith(f"{kind}, not a character device")


def test_live_ioctl_on_a_non_sev_device_is_a_clear_failure(tmp_path):
    _device_node(tmp_path / paths.SEV_DEVICE, NULL_DEVICE)  # ioctl gives ENOTTY
    with LiveHost(tmp_path, libvirt=False) as host:
        facts = psp.read(host, cpuid.read(host), kernel.read(host), kvm.read(host))
    assert facts.sev is None and facts.sev_unreadable.errno == errno.ENOTTY
    assert facts.sev_unreadable.reason is Reason.PSP_COMMAND_FAILED


def test_live_missing_devices_are_unknown_with_fix(tmp_path):
    with LiveHost(tmp_path, libvirt=False) as host:
        cpu = cpuid.read(host)
        msrs = msr.read(host)
    assert cpu.vendor is None and cpu.unreadable.reason is Reason.CPUID_DEVICE_MISSING
    assert msrs.syscfg is None and msrs.unreadable.reason is Reason.MSR_DEVICE_MISSING
    assert "modprobe msr" in msrs.unreadable.reason.fix


# -- MSR / PSP through snapshots -----------------------------------------------------------


def test_msr_eacces_is_unknown_not_disabled(snapshot):
    from nfd_snp.checks import Status, evaluate

    root = snapshot(
        base="genoa-snp-ready",
        capture={
            "msr": {},
            "unreadable": {
                "msr:0xc0010010": {"errno": errno.EACCES, "message": "Permission denied"}
            },
        },
        files={"proc/cpuinfo": "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu\n\n"},
    )
    facts = probe_root(root)
    assert facts.msr.syscfg is None and facts.msr.unreadable.reason is Reason.DEVICE_DENIED
    result = {r.check.name: r for r in evaluate(facts).results}["bios.mem_encrypt"]
    assert result.outcome.status is Status.UNKNOWN
    assert "root" in result.fix


def test_msr_unreadable_but_kernel_flag_vouches(snapshot):
    from nfd_snp.checks import Status, evaluate

    root = snapshot(
        base="genoa-snp-ready",
        capture={
            "msr": {},
            "unreadable": {"msr:0xc0010010": {"errno": errno.ENOENT, "message": "x"}},
        },
    )
    results = {r.check.name: r for r in evaluate(probe_root(root)).results}
    evidence = {name: results[name].outcome.inferred_from for name in results}
    assert evidence["bios.mem_encrypt"] == "the kernel flag 'sme'"
    assert evidence["bios.rmp"] == "the kernel flag 'sev_snp'"
    # the sev_snp flag does not prove SNP_EN (the kernel sets it later); the firmware does
    assert evidence["bios.snp_en"] == "SNP firmware state INIT"
    for name in ("bios.mem_encrypt", "bios.snp_en", "bios.rmp"):
        assert results[name].outcome.status is Status.PASS, name


@pytest.mark.parametrize(
    "key, err, reason",
    [
        ("sev_platform_status", errno.EACCES, Reason.DEVICE_DENIED),
        ("sev_platform_status", errno.ENOENT, Reason.PSP_DEVICE_MISSING),
        ("snp_platform_status", errno.EINVAL, Reason.SNP_NOT_INITIALISED),
        ("snp_platform_status", errno.EACCES, Reason.DEVICE_DENIED),
    ],
)
def test_psp_errors_classified_by_errno(snapshot, key, err, reason):
    root = snapshot(base="genoa-snp-ready", capture={key: {"errno": err}})
    facts = probe_root(root).psp
    unreadable = facts.sev_unreadable if key.startswith("sev") else facts.snp_unreadable
    assert unreadable.reason is reason and unreadable.errno == err


def test_psp_firmware_error_is_named(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        capture={"sev_platform_status": {"errno": errno.EIO, "fw_error": 0x1}},
    )
    unreadable = probe_root(root).psp.sev_unreadable
    assert unreadable.reason is Reason.PSP_COMMAND_FAILED
    assert "INVALID_PLATFORM_STATE (0x1)" in unreadable.detail


def _snp_bytes(rmp_flags, features=0, cur=0, rep=0):
    return struct.pack("<BBBBIIIQQ", 1, 55, 1, rmp_flags, 37, features, 2, cur, rep)


@pytest.mark.parametrize(
    "rmp_flags, rmp_init, alias",
    [(0x0, False, False), (0x1, True, False), (0x3, True, True), (0x2, False, True)],
)
def test_rmp_initialised_reads_bit0_only(rmp_flags, rmp_init, alias):
    status = psp.decode_snp_status(_snp_bytes(rmp_flags), TcbLayout.FAMILY_19H)
    assert (status.rmp_initialized, status.alias_check_complete) == (rmp_init, alias)


def test_snp_feature_bits():
    status = psp.decode_snp_status(_snp_bytes(1, features=0b1010101), TcbLayout.FAMILY_19H)
    assert (
        status.mask_chip_id and status.vlek_en and status.rapl_dis and status.ciphertext_hiding_en
    )
    assert not (status.mask_chip_key or status.feature_info or status.ciphertext_hiding_cap)
    assert status.build_id == 37 and status.guest_count == 2 and status.api_version == "1.55"


def test_threadripper_with_a_turin_model_number_is_not_turin():
    from nfd_snp.model import generation_of

    # Threadripper 9000 is family 0x1A model 0x08 (LibreHardwareMonitor PR #2494)
    assert generation_of(0x1A, 0x08, "AMD Ryzen Threadripper 9970X 32-Core Processor") is (
        Generation.UNKNOWN
    )
    assert generation_of(0x1A, 0x02, "AMD EPYC 9655 96-Core Processor") is Generation.TURIN


@pytest.mark.parametrize("family, layout", [(0x19, "milan-genoa"), (0x1A, "turin")])
def test_tcb_layout_follows_the_family(family, layout):
    assert TcbLayout.for_family(family).value == layout


def test_tcb_layouts_differ_by_family():
    raw = int.from_bytes(bytes([1, 2, 3, 4, 0, 0, 0, 9]), "little")
    genoa = TcbVersion.decode(raw, TcbLayout.FAMILY_19H)
    turin = TcbVersion.decode(raw, TcbLayout.FAMILY_1AH)
    assert (genoa.bootloader, genoa.tee, genoa.snp, genoa.microcode, genoa.fmc) == (
        1,
        2,
        0,
        9,
        None,
    )
    assert (turin.fmc, turin.bootloader, turin.tee, turin.snp, turin.microcode) == (1, 2, 3, 4, 9)


def test_sev_status_decode():
    data = struct.pack("<BBBIBI", 1, 55, 2, 0x101, 21, 7)
    status = psp.decode_sev_status(data)
    assert (status.api_version, status.state, status.build, status.guest_count) == (
        "1.55",
        2,
        21,
        7,
    )
    assert status.owned and status.config_es


# -- kvm_amd parameters -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, enabled, garbled",
    [
        ("Y\n", True, False),
        ("N\n", False, False),
        ("1\n", True, False),
        ("0\n", False, False),
        ("yes\n", None, True),
        ("\x00\xff\n", None, True),
        ("Y" * 100, None, True),
        ("", None, True),
    ],
)
def test_kvm_parameter_values(snapshot, content, enabled, garbled):
    root = snapshot(files={"sys/module/kvm_amd/parameters/sev_snp": content})
    from nfd_snp.host import open_host

    with open_host(root) as host:
        param = kvm.read_parameter(host, "sev_snp")
    assert param.present and param.enabled is enabled
    assert (
        param.unreadable is not None and param.unreadable.reason is Reason.FILE_GARBLED
    ) is garbled


def test_missing_sev_snp_parameter_means_old_kernel(snapshot):
    from nfd_snp.checks import Status, evaluate

    report = evaluate(
        probe_root(
            snapshot(base="genoa-snp-ready", files={"sys/module/kvm_amd/parameters/sev_snp": None})
        )
    )
    result = {r.check.name: r for r in report.results}["kvm.sev_snp"]
    assert result.outcome.status is Status.FAIL
    assert result.outcome.reason is Reason.KVM_NO_SNP_PARAMETER


def test_fifo_in_snapshot_does_not_block(snapshot):
    root = snapshot(base="genoa-snp-ready")
    path = root / "sys/module/kvm_amd/parameters/sev"
    path.unlink()
    os.mkfifo(path)
    from nfd_snp.host import open_host

    with open_host(root) as host:
        param = kvm.read_parameter(host, "sev")
    assert param.enabled is None and param.unreadable.reason is Reason.FILE_GARBLED


# -- misc cgroup --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "capacity, sev, sev_es",
    [
        ("sev 497\nsev_es 509\n", 497, 509),
        ("sev_es 509\nsev 497\n", 497, 509),
        ("sev_es 99\n", None, 99),
        ("res_a 3\nsev 10\n", 10, None),
        ("", None, None),
    ],
)
def test_misc_capacity_exact_keys(snapshot, capacity, sev, sev_es):
    facts = probe_root(snapshot(files={"sys/fs/cgroup/misc.capacity": capacity})).asids
    assert (facts.sev_capacity, facts.sev_es_capacity) == (sev, sev_es)
    assert facts.unreadable is None


@pytest.mark.parametrize("capacity", ["sev\n", "sev -1\n", "sev 1 2\n", "sev 0x10\n", "s" * 5000])
def test_misc_capacity_garbage_is_unknown(snapshot, capacity):
    facts = probe_root(snapshot(files={"sys/fs/cgroup/misc.capacity": capacity})).asids
    assert facts.sev_capacity is None and facts.unreadable.reason is Reason.FILE_GARBLED


def test_misc_found_on_hybrid_cgroup_root(snapshot):
    facts = probe_root(
        snapshot(
            files={
                "sys/fs/cgroup/unified/misc.capacity": "sev 5\nsev_es 3\n",
                "sys/fs/cgroup/unified/misc.current": "sev 1\n",
            }
        )
    ).asids
    assert facts.path == "/sys/fs/cgroup/unified"
    assert (facts.sev_capacity, facts.sev_es_capacity, facts.sev_current) == (5, 3, 1)


def test_asid_check_falls_back_to_cpuid(snapshot):
    from nfd_snp.checks import Status, evaluate

    root = snapshot(
        base="genoa-snp-ready",
        files={"sys/fs/cgroup/misc.capacity": None, "sys/fs/cgroup/misc.current": None},
    )
    results = {r.check.name: r for r in evaluate(probe_root(root)).results}
    assert results["asid.sev_es"].outcome.status is Status.PASS
    assert "CPUID ASIDs 510-1006" in results["asid.sev_es"].outcome.detail


# -- /proc/cpuinfo and kernel ------------------------------------------------------------


def test_cpuinfo_first_block_only():
    fields = kernel.parse_cpuinfo_block(
        "processor\t: 0\nflags\t: sev\n\nprocessor\t: 1\nflags\t: x\n"
    )
    assert fields["flags"] == "sev"


@pytest.mark.parametrize("content", ["\x00\x01\x02", "no colon here\n", ""])
def test_garbage_cpuinfo_is_unknown(snapshot, content):
    facts = probe_root(snapshot(files={"proc/cpuinfo": content})).kernel
    assert facts.flags is None and facts.unreadable.reason is Reason.FILE_GARBLED


def test_huge_cpuinfo_is_read_in_bounded_prefix(snapshot):
    block = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: sme sev\n\n"
    facts = probe_root(snapshot(files={"proc/cpuinfo": block + "x" * (3 * 1024 * 1024)})).kernel
    assert facts.flags == frozenset({"sme", "sev"})


# -- firmware descriptors and guests ---------------------------------------------------


def test_etc_descriptor_overrides_and_masks(snapshot):
    root = snapshot(
        base="genoa-snp-ready",
        files={
            "etc/qemu/firmware/60-edk2-ovmf-x64-amdsev.json": "",  # masks the SNP image
            "etc/qemu/firmware/70-broken.json": "{not json",
        },
    )
    facts = probe_root(root).firmware
    assert facts.snp_images == ()
    assert any("70-broken.json" in p and "not valid JSON" in p for p in facts.problems)


def test_descriptor_fields():
    image = firmware.parse_descriptor(
        "usr/share/qemu/firmware/60.json",
        b'{"mapping": {"device": "memory", "filename": "/x/OVMF.amdsev.fd"},'
        b' "features": ["amd-sev-snp", 7], "targets": [{"architecture": "x86_64"}]}',
    )
    assert image.executable == "/x/OVMF.amdsev.fd" and image.features == ("amd-sev-snp",)
    assert image.architectures == ("x86_64",)


@pytest.mark.parametrize(
    "argv, kind",
    [
        (
            [b"/usr/bin/qemu-system-x86_64", b"-object", b'{"qom-type":"sev-snp-guest","id":"l"}'],
            "sev-snp",
        ),
        ([b"/usr/libexec/qemu-kvm", b"-object", b"sev-guest,id=l,policy=0x5"], "sev"),
        ([b"/usr/bin/qemu-system-x86_64", b"-name", b"plain"], None),
        ([b"/bin/grep", b"sev-snp-guest"], None),  # not QEMU, only mentions it
    ],
)
def test_guest_kind(argv, kind):
    assert guests.guest_kind(b"\0".join(argv) + b"\0") == kind


@pytest.mark.parametrize(
    "release, sev_snp, sent",
    [
        (None, "N\n", False),  # unreadable release: maybe 6.16-6.19, so the cautious path
        ("garbage\n", "N\n", False),
        (None, "Y\n", True),  # SNP initialised already: the command changes nothing
        ("6.15.0\n", "N\n", True),
        ("6.16.1\n", "N\n", False),
        ("7.0.0\n", "N\n", True),
    ],
)
def test_snp_status_is_withheld_where_it_would_initialise_snp(snapshot, release, sev_snp, sent):
    """SNP_PLATFORM_STATUS runs SNP_INIT and SNP_SHUTDOWN on Linux 6.16-6.19 when SNP is not
    initialised; a kernel whose release cannot be read is treated as one of those."""
    root = snapshot(
        base="genoa-snp-ready",
        files={
            "proc/sys/kernel/osrelease": release,
            "sys/module/kvm_amd/parameters/sev_snp": sev_snp,
        },
    )
    facts = probe_root(root)
    unreadable = facts.psp.snp_unreadable
    withheld = unreadable is not None and unreadable.reason.code == "snp-status-not-queried"
    assert withheld is not sent
    assert (facts.psp.snp is not None) is sent
