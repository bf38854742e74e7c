"""The `nfd-snp` command: a thin click group over the library.

Exit codes (DESIGN.md): 0 ok / SEV-SNP ready, 1 not ready or refused, 2 usage or input
error. Errors are one line on stderr; a traceback only with -v, and only for bugs.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import click

from nfd_snp import __version__
from nfd_snp.errors import NfdSnpError

# nfd_snp.config.LIBVIRT_MODES, without importing config on the `check` path.
LIBVIRT_MODES = ("auto", "required", "off")
# A Kubernetes object name (DNS-1123 label).
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")

# Bundled sample snapshots ship inside the package (package_data); nothing on the start-up
# path imports importlib.resources or logging, which would cost more than the probe itself.
SAMPLES_DIR = Path(os.path.dirname(os.path.abspath(__file__))) / "samples"


def samples_dir() -> Path:
    return SAMPLES_DIR


def sample_names() -> list:
    base = samples_dir()
    return sorted(p.name for p in base.iterdir() if (p / "nfd-snp-capture.json").is_file())


@dataclass
class State:
    verbose: int = 0
    quiet: bool = False

    def info(self, message: str) -> None:
        """A progress line on stderr with -v."""
        if self.verbose and not self.quiet:
            click.echo(f"nfd-snp: {message}", err=True)


class NfdSnpGroup(click.Group):
    """Turns project errors into one stderr line and the documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except NfdSnpError as exc:
            click.echo(f"nfd-snp: error: {exc}", err=True)
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            ctx.exit(0)
        except Exception as exc:  # a bug: say so in one line unless asked for detail
            state = ctx.find_object(State)
            if state is not None and state.verbose:
                raise
            click.echo(
                f"nfd-snp: internal error: {type(exc).__name__}: {exc} "
                "(run with -v for a traceback and report it)",
                err=True,
            )
            ctx.exit(1)


@click.group(cls=NfdSnpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="More detail (repeat for debug logs).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors.")
@click.version_option(__version__, prog_name="nfd-snp")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """AMD SEV-SNP node enablement for KubeVirt and libvirt.

    Probes this node's SEV stack (CPU, BIOS, kernel, SEV firmware, KVM, ASIDs, libvirt,
    guest firmware), says which confidential guest types can run here and why not, and
    publishes that to Node Feature Discovery.
    """
    ctx.obj = State(verbose=verbose, quiet=quiet)


def probe_config(host_root, sample, libvirt, libvirt_timeout, **more):
    """The Config for `features` from the shared options (file settings only for `run`)."""
    from nfd_snp.config import Config, override

    root = _probe_root(host_root, sample)
    return override(
        Config(), host_root=root, libvirt=libvirt, libvirt_timeout=libvirt_timeout, **more
    )


def _probe_root(host_root, sample) -> str:
    if sample and host_root not in (None, "/"):
        raise click.UsageError("--sample and --host-root exclude each other")
    return str(samples_dir() / sample) if sample else (host_root or "/")


def open_report(host_root, sample, libvirt, libvirt_timeout):
    """`check`'s probe: only the probe and the checks are imported (no service modules)."""
    from nfd_snp.probe import probe_report

    root = _probe_root(host_root, sample)
    mode = libvirt or "auto"
    state = click.get_current_context().find_object(State) or State()
    state.info(f"probing {root} (libvirt {mode})")
    timeout = {} if libvirt_timeout is None else {"libvirt_timeout": libvirt_timeout}
    return probe_report(root, libvirt=mode, **timeout)


libvirt_option = click.option(
    "--libvirt",
    type=click.Choice(LIBVIRT_MODES),
    default=None,
    help="auto: ask the host's libvirt for its domain capabilities when a daemon runs "
    "(default); required: a node without host libvirt is not ready; off: never ask.",
)
libvirt_timeout_option = click.option(
    "--libvirt-timeout",
    type=click.FloatRange(0.1, 300),
    default=None,
    metavar="SECONDS",
    help="Give up on a libvirt daemon that does not answer (default 10).",
)


def stacked(*options):
    """One decorator applying click options in the order they are listed (help order)."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


# --host-root / --sample / libvirt options shared by the commands that probe.
host_options = stacked(
    click.option(
        "--host-root",
        default=None,
        envvar="NFD_SNP_HOST_ROOT",
        metavar="DIR",
        help="Read the host below DIR: / on a node (default), /host in a container, or "
        "a snapshot directory written by `nfd-snp capture` (replayed, no devices touched).",
    ),
    click.option(
        "--sample",
        type=click.Choice(sample_names()),
        help="Check a bundled sample node instead of this host.",
    ),
    libvirt_option,
    libvirt_timeout_option,
)


@cli.command()
@host_options
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable report (docs/check-json.md)."
)
@click.option("--failures", is_flag=True, help="Show only failed, warning and unknown checks.")
def check(host_root, sample, libvirt, libvirt_timeout, as_json, failures):
    """Readiness report: every check PASS/FAIL/SKIP/UNKNOWN with detail and fix.

    Ends with the SEV, SEV-ES and SEV-SNP verdicts. Exit status: 0 when SEV-SNP guests
    can run, 1 when they cannot or readiness is unknown, 2 on a usage or input error.

    \b
    Examples:
      nfd-snp check                         this host (run as root for full detail)
      nfd-snp check --sample genoa-snp-ready
      nfd-snp check --host-root ./node7     a snapshot from `nfd-snp capture`
    """
    from nfd_snp.checks import Guest, Readiness
    from nfd_snp.report import render_json, render_table

    report = open_report(host_root, sample, libvirt, libvirt_timeout)
    if as_json:
        click.echo(render_json(report), nl=False)
    else:
        # Colour only on a terminal (click strips it otherwise), and never with NO_COLOR set.
        color = False if os.environ.get("NO_COLOR") else None
        click.echo(render_table(report, failures_only=failures), nl=False, color=color)
    ready = report.verdict(Guest.SEV_SNP).ready is Readiness.YES
    click.get_current_context().exit(0 if ready else 1)


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, writable=True))
@click.option(
    "--host-root",
    default="/",
    show_default=True,
    envvar="NFD_SNP_HOST_ROOT",
    metavar="DIR",
    help="The live host to capture (/ on a node, /host in a container).",
)
@click.option(
    "--libvirt",
    type=click.Choice(("auto", "off")),
    default="auto",
    show_default=True,
    help="Include libvirt's domain capabilities (auto: when a daemon runs).",
)
def capture(out, host_root, libvirt):
    """Save every input the probe reads from this host into the directory OUT.

    OUT then replays with `nfd-snp check --host-root OUT`: for support bundles and test
    corpora. Run as root, or the CPUID/MSR/PSP sources are recorded as unreadable. Only
    QEMU processes' command lines are kept from /proc.
    """
    from nfd_snp.capture import capture as do_capture

    do_capture(out, host_root, libvirt=libvirt == "auto")
    click.echo(f"captured {host_root} into {out}; replay with: nfd-snp check --host-root {out}")


@cli.command()
@host_options
@click.option(
    "--output",
    "-o",
    default=None,
    metavar="PATH|-",
    help="Feature file to write (default "
    "/etc/kubernetes/node-feature-discovery/features.d/nfd-snp); '-' prints it.",
)
@click.option(
    "--ttl",
    type=click.FloatRange(120, 7 * 86400),
    default=None,
    metavar="SECONDS",
    help="How long the labels stay valid without a rewrite (default 600).",
)
def features(host_root, sample, libvirt, libvirt_timeout, output, ttl):
    """Write the NFD feature file once (labels such as sev-snp.node.kubevirt.io/enabled).

    Labels appear only for guest types that can run here; SNP firmware facts (api-version,
    build-id, tcb-*) and ASID/C-bit features (no label) follow. The file is written
    atomically and left alone when its content is unchanged and not near expiry. For a
    node, prefer the `run` service, which keeps the labels true and renews them.
    """
    from nfd_snp.nfd import DEFAULT_PATH
    from nfd_snp.service import write_once

    config = probe_config(host_root, sample, libvirt, libvirt_timeout, ttl=ttl)
    target = output or DEFAULT_PATH
    result, text = write_once(config, target)
    if text is not None:
        click.echo(text, nl=False)
    elif result.written:
        click.echo(f"wrote {target} ({result.reason})", err=True)
    else:
        click.echo(f"{target} is up to date", err=True)


@cli.command()
@click.option(
    "--config",
    "config_path",
    default=None,
    metavar="PATH",
    help="Configuration file (default /etc/nfd-snp/nfd-snp.conf, optional).",
)
@click.option(
    "--host-root",
    default=None,
    metavar="DIR",
    help="Host to probe: / (default), /host in a container, or a snapshot.",
)
@click.option(
    "--interval",
    type=click.FloatRange(1, 86400),
    default=None,
    metavar="SECONDS",
    help="Seconds between probes (default 60).",
)
@click.option(
    "--ttl",
    type=click.FloatRange(2, 7 * 86400),
    default=None,
    metavar="SECONDS",
    help="Label lifetime without renewal (default 600; at least twice the interval).",
)
@click.option("--output", "-o", default=None, metavar="PATH", help="Feature file to keep true.")
@click.option(
    "--facts-cache",
    default=None,
    metavar="PATH",
    help="Host facts for the libvirt hook (default /run/nfd-snp/facts.json).",
)
@click.option(
    "--metrics-textfile",
    default=None,
    metavar="PATH",
    help="Also write Prometheus metrics for node-exporter's textfile collector.",
)
@libvirt_option
@libvirt_timeout_option
def run(config_path, **options):
    """The node service: probe every interval and keep the NFD labels true.

    Rewrites the feature file only when a label or feature changes (or to renew the expiry
    when less than half the ttl is left), updates the facts cache the libvirt hook reads,
    and logs one line per change. Labels expire `ttl` seconds after the service stops.
    SIGTERM/SIGINT stop it cleanly; SIGHUP re-reads the configuration file (command-line
    options still win).
    """
    from nfd_snp import config as config_mod
    from nfd_snp.service import Service

    path = config_path or config_mod.DEFAULT_CONFIG

    def load():
        base = config_mod.load(path, required=config_path is not None)
        return config_mod.override(base, **options)

    service = Service(load(), reload=load)
    click.get_current_context().exit(service.run())


class DomainGroup(click.Group):
    """`nfd-snp domain`, whose help lists the SEV-SNP options from their declarations."""

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        super().format_help_text(ctx, formatter)
        # Imported only to show help: the options module is not on any command's start-up path.
        from nfd_snp.domain.options import OPTIONS

        with formatter.section("SEV-SNP options (--option NAME=VALUE, or marker attributes)"):
            formatter.write_dl([(name, field.help_line) for name, field in OPTIONS.items()])


@cli.group(cls=DomainGroup)
def domain():
    """Make libvirt domains SEV-SNP guests (the engine behind the hook and the sidecar).

    A domain asks for SEV-SNP with a metadata element,
    <metadata><snp:sev-snp xmlns:snp="urn:nfd-snp:1" policy="0x30000"/></metadata>,
    whose optional attributes are the options below; the libvirt hook then refuses to
    start it unless it is a valid SNP guest for the node.
    """


domain_options = stacked(
    click.option(
        "--option",
        "flags",
        multiple=True,
        metavar="NAME=VALUE",
        help="An SEV-SNP option; repeatable; overrides the domain's marker.",
    ),
    click.option(
        "--facts",
        default=None,
        metavar="PATH|none",
        help="Node facts cache (default /run/nfd-snp/facts.json when present): C-bit, "
        "firmware ABI and SNP firmware image of this node.",
    ),
    click.option(
        "--schemas",
        default=None,
        metavar="DIR",
        help="Validate against libvirt's RelaxNG schemas in DIR (default: the host's, "
        "when they know sev-snp).",
    ),
)


def _node_facts(load_node, facts):
    node, warning = load_node(facts)
    if warning:
        click.echo(f"nfd-snp: warning: {warning}", err=True)
    return node


def _schema_dir(schemas):
    from nfd_snp.domain import schema

    if schemas is None:
        return schema.host_schema_dir()
    if not schema.knows_sev_snp(schemas):
        raise click.BadParameter(
            f"{schemas} holds no libvirt schema that knows sev-snp", param_hint="--schemas"
        )
    return schemas


@domain.command("rewrite")
@domain_options
@click.option(
    "--input",
    "-i",
    "source",
    type=click.File("rb"),
    default="-",
    help="Domain XML to read (default stdin).",
)
def domain_rewrite(flags, facts, schemas, source):
    """Rewrite domain XML into an SEV-SNP guest: stdin to stdout.

    Adds the SEV-SNP request to the domain (merging --option flags), then sets
    launchSecurity type='sev-snp' with its policy and options, a stateless SNP firmware
    (no NVRAM) and iommu='on' on virtio devices. Refuses, with the reason, what cannot
    work: SEV attestation data (dhCert/session), Secure Boot/SMM, invalid options.
    """
    from nfd_snp.domain.cli_support import load_node, rewrite_text

    node = _node_facts(load_node, facts)
    data = source.read(64 * 1024 * 1024 + 1)
    click.echo(rewrite_text(data, flags, node, _schema_dir(schemas)), nl=False)


@domain.command("convert")
@click.argument("name")
@domain_options
@click.option(
    "--connect",
    "-c",
    "uri",
    default="qemu:///system",
    show_default=True,
    metavar="URI",
    help="libvirt connection.",
)
@click.option("--dry-run", is_flag=True, help="Print a unified diff instead of defining.")
def domain_convert(name, flags, facts, schemas, uri, dry_run):
    """Convert the defined (shut off) domain NAME into an SEV-SNP guest.

    Reads its inactive XML through libvirt, rewrites it like `domain rewrite`, and defines
    the result. libvirt then checks it too: on a host whose QEMU lacks SEV-SNP it refuses.
    """
    from nfd_snp.domain.cli_support import convert, load_node

    node = _node_facts(load_node, facts)
    result, warning = convert(name, uri, flags, node, dry_run, _schema_dir(schemas))
    if dry_run:
        click.echo(result or f"{name} is already an SEV-SNP guest as requested\n", nl=False)
        if warning:
            click.echo(f"nfd-snp: warning: {warning}", err=True)
    else:
        click.echo(f"converted {name} to an SEV-SNP guest; start it with: virsh start {name}")


@cli.group()
def kubevirt():
    """KubeVirt: the hook sidecar, SEV-SNP instancetypes, and an offline VM check.

    \b
      nfd-snp kubevirt sidecar-configmap | kubectl apply -n NAMESPACE -f -
      nfd-snp kubevirt instancetypes | kubectl apply -f -
      nfd-snp kubevirt check-vm my-vm.yaml
    """


def _configmap_name(_ctx, _param, value):
    if not _K8S_NAME.match(value):
        raise click.BadParameter("must be a DNS-1123 name (a-z, 0-9, '-')")
    return value


@kubevirt.command("sidecar-configmap")
@click.option(
    "--name",
    default="nfd-snp-sidecar",
    show_default=True,
    metavar="NAME",
    callback=_configmap_name,
    help="ConfigMap name (referenced by the VM's hookSidecars annotation).",
)
@click.option("--script", is_flag=True, help="Print only the script, not the ConfigMap.")
def kubevirt_sidecar_configmap(name, script):
    """Print a ConfigMap holding the onDefineDomain script, as readable source.

    The script is a short loader followed by nfd-snp's own engine modules, verbatim; it
    needs only the Python standard library (3.9+), so it runs in KubeVirt's stock
    sidecar-shim image. Apply it in each namespace that runs SEV-SNP VMs, enable the
    Sidecar feature gate, and reference it from a VM or use `nfd-snp kubevirt
    instancetypes` (docs/kubevirt.md).

    \b
      nfd-snp kubevirt sidecar-configmap | kubectl apply -n NAMESPACE -f -
    """
    from nfd_snp import sidecar_bundle

    click.echo(
        sidecar_bundle.build_script() if script else sidecar_bundle.configmap(name), nl=False
    )


sidecar_configmap_option = click.option(
    "--sidecar-configmap",
    default="nfd-snp-sidecar",
    show_default=True,
    metavar="NAME",
    callback=_configmap_name,
    help="Name of the ConfigMap holding the sidecar script.",
)


@kubevirt.command("instancetypes")
@sidecar_configmap_option
@click.option(
    "--snp-on-sev",
    is_flag=True,
    help="For KubeVirt before 1.7: SEV launch security made SEV-SNP by the sidecar.",
)
def kubevirt_instancetypes(sidecar_configmap, snp_on_sev):
    """Print SEV-SNP instancetypes and the preference they need.

    Cluster-scoped VirtualMachineClusterInstancetypes snp.small, snp.medium, snp.large and
    snp.xlarge (launchSecurity.snp, KubeVirt 1.7+; with --snp-on-sev: snp-on-sev.*), each
    with the node selector and the hook sidecar, and the VirtualMachineClusterPreference
    snp (EFI without Secure Boot, no SMM). A VM then asks for SEV-SNP by name:

    \b
      spec:
        instancetype: {name: snp.medium}
        preference: {name: snp}
    """
    from nfd_snp import kubevirt_manifests as km

    family = km.ON_SEV if snp_on_sev else km.UPSTREAM
    click.echo(km.render(family, sidecar_configmap), nl=False)


@kubevirt.command("check-vm")
@click.argument(
    "files",
    nargs=-1,
    required=True,
    metavar="FILE|-...",
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
@sidecar_configmap_option
@click.option(
    "--vep-field",
    is_flag=True,
    help="Accept launchSecurity.sev.secureNestedPaging (only for a KubeVirt whose API "
    "carries the field from VEP #58; upstream KubeVirt's does not).",
)
def kubevirt_check_vm(files, sidecar_configmap, vep_field):
    """Check the SEV-SNP request of VM and VMI manifests, offline.

    Reads VirtualMachines and VirtualMachineInstances (YAML or JSON, '-' for stdin), applies
    the instancetype and preference a VM names as KubeVirt would (nfd-snp's are known;
    pass other definitions as further files), and checks it with the rules of KubeVirt's
    admission webhook and the code the sidecar runs. Exit status: 0 when every VM gets
    SEV-SNP, 1 when one would not (each reason on its own line), 2 on unreadable input or a
    VM that cannot be checked from it.

    \b
      nfd-snp kubevirt check-vm deploy/kubevirt/vm-snp.yaml
      kubectl get vm my-vm -o yaml | nfd-snp kubevirt check-vm -
    """
    from nfd_snp import kubevirt_check

    objects = []
    for name in files:
        with click.open_file(name, "rb") as handle:
            data = handle.read(kubevirt_check.MAX_INPUT_BYTES + 1)
        objects += kubevirt_check.load_documents(data, "stdin" if name == "-" else name)
    results = kubevirt_check.check_documents(
        objects, configmap=sidecar_configmap, vep_field=vep_field
    )
    click.echo(kubevirt_check.render(results), nl=False)
    click.get_current_context().exit(kubevirt_check.exit_status(results))


def main() -> None:
    cli(prog_name="nfd-snp")


if __name__ == "__main__":
    main()
