"""The `nfd-snp` command: a thin click group over the library.

Exit statuses (DESIGN.md): 0 ok / SEV-SNP ready, 1 not ready, refused or not done, 2 usage
or input error, 70 internal error (a bug: please report it). Errors are one line on stderr,
with control characters escaped; a traceback only with -v, and only for bugs. Diagnostics go
through `nfd_snp.log` (journald priorities under systemd, -v debug lines, -q errors only);
stdout carries only what a command produces (a report, a feature file, XML, manifests).

Options that are settings (`--host-root`, `--ttl`, `--libvirt`, ...) are built from
`nfd_snp.config.SETTINGS`, and every value, from the command line, the environment or
`run`'s configuration file, goes through that module's one validation.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import click
from click.core import ParameterSource

from nfd_snp import __version__, log
from nfd_snp import config as settings
from nfd_snp.errors import EXIT_INTERNAL_ERROR, NfdSnpError, printable

# A Kubernetes object name (DNS-1123 label).
_K8S_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
# ctx.meta keys of `run`.
CONFIG_FILE = "nfd_snp.config_file"
SIGNALS = "nfd_snp.signals"

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


class NfdSnpGroup(click.Group):
    """Turns project errors into one stderr line and the documented exit code."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except NfdSnpError as exc:
            log.error(str(exc))
            ctx.exit(exc.exit_code)
        except BrokenPipeError:
            ctx.exit(0)
        except Exception as exc:  # a bug: say so in one line unless asked for detail
            state = ctx.find_object(State)
            if state is not None and state.verbose:
                raise
            log.critical(
                f"{type(exc).__name__}: {printable(exc)} "
                "(run with -v for a traceback and report it)"
            )
            ctx.exit(EXIT_INTERNAL_ERROR)


@click.group(cls=NfdSnpGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="Debug lines on stderr: what each source read, timings; tracebacks of bugs.",
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr.")
@click.version_option(__version__, prog_name="nfd-snp")
@click.pass_context
def cli(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """AMD SEV-SNP node enablement for KubeVirt and libvirt.

    Probes this node's SEV stack (CPU, BIOS, kernel, SEV firmware, KVM, ASIDs, libvirt,
    guest firmware), says which confidential guest types can run here and why not, and
    publishes that to Node Feature Discovery.

    Exit status: 0 ok, 1 not ready or refused, 2 usage or input error, 70 internal error
    (a bug in nfd-snp: run again with -v and report the traceback).
    """
    ctx.obj = State(verbose=verbose, quiet=quiet)
    log.configure(verbose, quiet)


# -- settings as options ---------------------------------------------------------------


def _shown(value) -> str:
    if value is None:
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


def setting_option(field: str):
    """The click option of one setting, as `nfd_snp.config.SETTINGS` declares it.

    No click type and no click default: the value reaches `settings.build` as given (the
    default when absent), so the command line is validated like the file, in one line.
    """
    setting = settings.SETTING[field]
    decls = [setting.option, *([setting.short] if setting.short else []), setting.field]
    return click.option(
        *decls,
        default=None,
        envvar=setting.envvar,
        show_envvar=setting.envvar is not None,
        metavar=setting.metavar,
        help=f"{setting.help} [default: {_shown(setting.default)}]",
    )


def stacked(*options):
    """One decorator applying click options in the order they are listed (help order)."""

    def decorate(func):
        for option in reversed(options):
            func = option(func)
        return func

    return decorate


FROM_USER = (ParameterSource.COMMANDLINE, ParameterSource.ENVIRONMENT)


def given_settings(ctx: click.Context, values: dict, sources=None) -> dict:
    """`settings.Given` for the setting options this command received (from `sources`)."""
    given = {}
    for field, value in values.items():
        source = ctx.get_parameter_source(field)
        if sources is not None and source not in sources:
            continue
        setting = settings.SETTING[field]
        if source is ParameterSource.COMMANDLINE:
            given[field] = (value, setting.option)
        elif source is ParameterSource.ENVIRONMENT:
            given[field] = (value, setting.envvar)
        elif source is ParameterSource.DEFAULT_MAP:
            given[field] = (value, f"{ctx.meta[CONFIG_FILE]}: {setting.key}")
    return given


def probe_config(ctx: click.Context, sample, values: dict) -> settings.Config:
    """The validated settings of a probing command; --sample stands for its snapshot."""
    given = given_settings(ctx, values)
    if sample:
        if given.get("host_root", ("/",))[0] != "/":
            raise click.UsageError("--sample and --host-root exclude each other")
        given["host_root"] = (str(samples_dir() / sample), "--sample")
    return settings.build(given)


probe_options = stacked(
    setting_option("host_root"),
    setting_option("libvirt"),
    setting_option("libvirt_timeout"),
)
sample_option = click.option(
    "--sample",
    type=click.Choice(sample_names()),
    help="Check a bundled sample node instead of this host.",
)


@cli.command()
@probe_options
@sample_option
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable report (docs/check-json.md)."
)
@click.option("--failures", is_flag=True, help="Show only failed, warning and unknown checks.")
@click.pass_context
def check(ctx, sample, as_json, failures, **values):
    """Readiness report: every check PASS/WARN/FAIL/SKIP/UNKNOWN with detail and fix.

    Ends with the SEV, SEV-ES and SEV-SNP verdicts; with -v each check also says what it
    looks at. Exit status: 0 when SEV-SNP guests can run, 1 when they cannot or readiness
    is unknown, 2 on a usage or input error, 70 on an internal error.

    \b
    Examples:
      nfd-snp check                         this host (run as root for full detail)
      nfd-snp check --sample genoa-snp-ready
      nfd-snp check --host-root ./node7     a snapshot from `nfd-snp capture`
    """
    from nfd_snp.checks import Guest, Readiness
    from nfd_snp.probe import probe_report
    from nfd_snp.report import render_json, render_table

    config = probe_config(ctx, sample, values)
    log.debug(f"probing {config.host_root} (libvirt {config.libvirt})")
    report = probe_report(config).report
    if as_json:
        click.echo(render_json(report), nl=False)
    else:
        # Colour only on a terminal (click strips it otherwise), and never with NO_COLOR set.
        color = False if os.environ.get("NO_COLOR") else None
        text = render_table(report, failures_only=failures, describe=ctx.obj.verbose > 0)
        click.echo(text, nl=False, color=color)
    ready = report.verdict(Guest.SEV_SNP).ready is Readiness.YES
    ctx.exit(0 if ready else 1)


@cli.command()
@click.argument("out", type=click.Path(file_okay=False, writable=True))
@probe_options
@click.option(
    "--no-guests",
    is_flag=True,
    help="Leave out the running guests' QEMU command lines (disk paths, networks, device "
    "details); the replay then shows no running guests.",
)
@click.pass_context
def capture(ctx, out, no_guests, **values):
    """Save every input the probe reads from this host into the directory OUT.

    OUT then replays with `nfd-snp check --host-root OUT`: for support bundles and test
    corpora. --host-root is the live host to capture (/ on a node, /host in a container);
    --libvirt off leaves libvirt's domain capabilities out. Run as root, or the
    CPUID/MSR/PSP sources are recorded as unreadable. From /proc it keeps the running QEMU
    guests' full command lines (their disk paths, networks and devices: read them before
    you share a capture, or leave them out with --no-guests), the boot time, and the
    libvirt daemons' stat and status files.
    """
    from nfd_snp.capture import capture as do_capture

    config = probe_config(ctx, None, values)
    do_capture(out, config, guests=not no_guests)
    log.info(
        f"captured {config.host_root} into {out}; replay with: nfd-snp check --host-root {out}"
    )


@cli.command()
@probe_options
@sample_option
@setting_option("output")
@setting_option("ttl")
@click.pass_context
def features(ctx, sample, **values):
    """Write the NFD feature file once (labels such as sev-snp.node.kubevirt.io/enabled).

    Labels appear only for guest types that can run here; SNP firmware facts (api-version,
    build-id, tcb-*) and ASID/C-bit features (no label) follow. The file is written
    atomically and left alone when its content is unchanged and not near expiry. For a
    node, prefer the `run` service, which keeps the labels true and renews them.
    """
    from nfd_snp.service import write_once

    config = probe_config(ctx, sample, values)
    result, text = write_once(config, config.output)
    if text is not None:
        click.echo(text, nl=False)
    elif result.written:
        log.info(f"wrote {config.output} ({result.reason})")
    else:
        log.info(f"{config.output} is up to date")


class ServiceCommand(click.Command):
    """`run`: its signal handlers go in before its arguments and configuration are read."""

    def parse_args(self, ctx: click.Context, args: list) -> list:
        from nfd_snp.signals import SignalFlags

        ctx.meta[SIGNALS] = SignalFlags.install()
        return super().parse_args(ctx, args)


def _config_file(ctx: click.Context, _param, value):
    """--config (eager): the file's settings become the defaults of the other options."""
    path = value or settings.DEFAULT_CONFIG
    ctx.meta[CONFIG_FILE] = path
    given = settings.read_file(path, required=value is not None)
    ctx.default_map = {field: raw for field, (raw, _where) in given.items()}
    return path


@cli.command(cls=ServiceCommand)
@click.option(
    "--config",
    "config_path",
    is_eager=True,
    callback=_config_file,
    metavar="PATH",
    help=f"Configuration file whose settings are the defaults of the options below "
    f"[default: {settings.DEFAULT_CONFIG}, optional].",
)
@stacked(*(setting_option(s.field) for s in settings.SETTINGS))
@click.pass_context
def run(ctx, config_path, **values):
    """The node service: probe every interval and keep the NFD labels true.

    Rewrites the feature file only when a label or feature changes (or to renew the expiry
    when less than half the ttl is left), updates the facts cache the libvirt hook reads,
    and logs one line per change. Labels expire `ttl` seconds after the service stops.
    SIGTERM/SIGINT stop it within a second; SIGHUP re-reads the configuration file
    (command-line options still win). Every file it writes must be absent or a regular file
    of its own (a device, FIFO or link is refused: exit 2); `--output none` writes no
    feature file. One service per file: a second one sharing any exits (status 1).
    """
    from nfd_snp.service import Service

    overrides = given_settings(ctx, values, FROM_USER)  # they win over the file on reload too
    required = ctx.get_parameter_source("config_path") is ParameterSource.COMMANDLINE

    def reload() -> settings.Config:
        return settings.load(config_path, required=required, overrides=overrides)

    config = settings.build(given_settings(ctx, values))
    service = Service(config, reload=reload, signals=ctx.meta[SIGNALS])
    ctx.exit(service.run())


@cli.command()
@click.option(
    "--nodes",
    "nodes_file",
    required=True,
    metavar="FILE|-",
    type=click.File("rb"),
    help="The cluster's nodes: `kubectl get nodes -o json` ('-' for stdin).",
)
@click.option(
    "--nodefeatures",
    "features_file",
    metavar="FILE|-",
    type=click.File("rb"),
    help="NFD's NodeFeatures, `kubectl get nodefeatures -A -o json`: the root cause of each "
    "node that is not ready, and which nodes run no nfd-snp.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def fleet(nodes_file, features_file, as_json):
    """SEV, SEV-ES and SEV-SNP readiness of every node of a cluster, and what blocks them.

    One row per node: each guest type ready or not (its <guest>.node.kubevirt.io/enabled
    label), the SNP firmware API, build and reported TCB, the GPU passthrough label and,
    with --nodefeatures, the checks that block it. Then the nodes per state and the root
    causes ranked by the SEV-SNP nodes they block: fix the first one first. Exit status 0,
    or 2 on unreadable input.

    \b
      kubectl get nodes -o json > nodes.json
      kubectl get nodefeatures -A -o json > nodefeatures.json
      nfd-snp fleet --nodes nodes.json --nodefeatures nodefeatures.json
      kubectl get nodes -o json | nfd-snp fleet --nodes -
    """
    from nfd_snp import fleet as fleet_view

    if (
        features_file is not None
        and _input_name(nodes_file) == _input_name(features_file) == "stdin"
    ):
        raise click.UsageError("--nodes and --nodefeatures cannot both read stdin")
    result = fleet_view.read(
        *_input(nodes_file, fleet_view.MAX_INPUT_BYTES),
        *(_input(features_file, fleet_view.MAX_INPUT_BYTES) if features_file else (None, "")),
    )
    click.echo(
        fleet_view.render_json(result) if as_json else fleet_view.render_text(result), nl=False
    )


def _input_name(handle) -> str:
    """The name errors give an input: its path, or stdin."""
    name = getattr(handle, "name", None)
    return name if isinstance(name, str) and name != "<stdin>" else "stdin"


def _input(handle, limit: int) -> tuple:
    """(at most limit + 1 bytes, the name errors give it) of an input file or stdin."""
    return handle.read(limit + 1), _input_name(handle)


root_option = click.option(
    "--root",
    default="/",
    show_default=True,
    metavar="DIR",
    type=click.Path(exists=True, file_okay=False),
    help="Work under DIR (a staging tree or an image): files only, nothing started or restarted.",
)
dry_run_option = click.option("--dry-run", is_flag=True, help="Print each step; change nothing.")


@cli.command("install")
@root_option
@dry_run_option
@click.option(
    "--no-reload",
    is_flag=True,
    help="Do not restart the libvirt daemons that started before the hook (libvirt looks for "
    "hooks when it starts); `nfd-snp check` then warns (libvirt.hook) until they restart.",
)
def install_command(root, dry_run, no_reload):
    """Install nfd-snp on this host without the RPM, for the Python that runs this command.

    Writes the libvirt hook (/etc/libvirt/hooks/qemu.d/50-nfd-snp, running this Python), the
    unit /etc/systemd/system/nfd-snp.service (ExecStart runs this Python; its sandbox can
    read a Python under /root or /home), /etc/tmpfiles.d and /etc/modules-load.d files, and
    /etc/nfd-snp/nfd-snp.conf unless it exists; creates the feature and facts directories;
    under systemd enables and starts nfd-snp.service; and restarts the libvirt daemons that
    started before the hook, so that they run it (running guests keep running). Files that
    already say the same are left alone, so running it again is safe. Exit status 0 when
    done, 1 when something is in the way (the reason says what to do).

    \b
      python3 -m venv /opt/nfd-snp && /opt/nfd-snp/bin/pip install '.[libvirt]'
      /opt/nfd-snp/bin/nfd-snp install
      nfd-snp check                       libvirt.hook: PASS once libvirt loaded the hook
    """
    from nfd_snp.install import install

    install(root, dry_run=dry_run, reload=not no_reload, echo=click.echo)


@cli.command("uninstall")
@root_option
@dry_run_option
def uninstall_command(root, dry_run):
    """Remove what `nfd-snp install` wrote and what the service wrote.

    Stops the service, removes the hook, unit, tmpfiles.d, modules-load.d and (unless you
    changed it) configuration files, the feature file (the node's labels go with it), the
    facts cache and its lock, the metrics textfile and the directories install created.
    Domains that ask for SEV-SNP then start without nfd-snp's check: the command says so
    and names them.
    """
    from nfd_snp.install import uninstall

    uninstall(root, dry_run=dry_run, echo=click.echo)


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
        log.warning(warning)
    if node is not None and node.cbitpos is None:
        log.warning(
            "the node facts hold no C-bit position (its CPU does not show CPUID 0x8000001F): "
            "<cbitpos> is left out, for libvirt to fill in from its own capabilities at start"
        )
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
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print a unified diff instead of defining; exit 1 when defining it would fail.",
)
def domain_convert(name, flags, facts, schemas, uri, dry_run):
    """Convert the defined (shut off) domain NAME into an SEV-SNP guest.

    Reads its inactive XML through libvirt, rewrites it like `domain rewrite`, and defines
    the result. libvirt then checks it too: on a host whose QEMU lacks SEV-SNP it refuses.
    Exit status 0 when converted (or, with --dry-run, when it would be), 1 when refused.
    """
    from nfd_snp.domain.cli_support import convert, load_node

    try:
        import libvirt  # noqa: F401  (the package nfd-snp-libvirt brings it; nfd-snp does not)
    except ImportError:
        raise NfdSnpError(
            "domain convert talks to libvirt through libvirt-python, which is not installed: "
            "install nfd-snp-libvirt (or python3-libvirt)"
        ) from None
    node = _node_facts(load_node, facts)
    result, failure = convert(name, uri, flags, node, dry_run, _schema_dir(schemas))
    if dry_run:
        click.echo(result or f"{name} is already an SEV-SNP guest as requested\n", nl=False)
        if failure:
            log.error(failure)
            click.get_current_context().exit(1)
    else:
        log.info(f"converted {name} to an SEV-SNP guest; start it with: virsh start {name}")


@cli.group()
def kubevirt():
    """KubeVirt: the Plugin, the hook sidecar, SEV-SNP instancetypes, an offline VM check.

    \b
      nfd-snp kubevirt plugin | kubectl apply -f -                  (KubeVirt 1.9+)
      nfd-snp kubevirt instancetypes | kubectl apply -f -
      nfd-snp kubevirt sidecar-configmap | kubectl apply -n NAMESPACE -f -
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
    from nfd_snp.kubevirt import sidecar_bundle

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


KUBEVIRT_RELEASES = ("1.9", "1.7", "1.6")


@kubevirt.command("instancetypes")
@sidecar_configmap_option
@click.option(
    "--kubevirt",
    "release",
    type=click.Choice(KUBEVIRT_RELEASES),
    default="1.9",
    show_default=True,
    help="1.9: for KubeVirt 1.9+ (SEV-SNP from the preference, options from the Plugin); "
    "1.7: KubeVirt 1.7-1.9 with hook sidecars (launchSecurity.snp); 1.6: older KubeVirt "
    "(SEV made SEV-SNP by the sidecar).",
)
@click.option("--snp-on-sev", is_flag=True, help="The same as --kubevirt 1.6.")
def kubevirt_instancetypes(sidecar_configmap, release, snp_on_sev):
    """Print SEV-SNP instancetypes and the preference they need.

    Cluster-scoped VirtualMachineClusterInstancetypes snp.small, snp.medium, snp.large and
    snp.xlarge (snp-on-sev.* for 1.6), each with the node selector, and the
    VirtualMachineClusterPreference snp (EFI without Secure Boot, no SMM; for 1.9 also
    preferredLaunchSecurity snp). A VM then asks for SEV-SNP by name:

    \b
      spec:
        instancetype: {name: snp.medium}
        preference: {name: snp}
    """
    from nfd_snp.kubevirt import manifests as km

    if snp_on_sev:
        release = "1.6"
    family = {"1.9": km.PLUGINS, "1.7": km.UPSTREAM, "1.6": km.ON_SEV}[release]
    click.echo(km.render(family, sidecar_configmap), nl=False)


@kubevirt.command("plugin")
@click.option(
    "--socket",
    default="/var/run/kubevirt/plugins/nfd-snp.sock",
    show_default=True,
    metavar="PATH",
    help="The node service's node-hook-socket, as virt-handler sees it.",
)
@click.option(
    "--name",
    default="nfd-snp",
    show_default=True,
    metavar="NAME",
    callback=_configmap_name,
    help="The Plugin's name.",
)
def kubevirt_plugin(socket, name):
    """Print the Plugin (KubeVirt 1.9+, feature gate Plugins) with nfd-snp's node hook and
    CEL domain hook.

    \b
      nfd-snp kubevirt plugin | kubectl apply -f -
    """
    from nfd_snp.kubevirt import plugin

    if not socket.startswith("/"):
        raise click.BadParameter("must be an absolute path", param_hint="--socket")
    click.echo(plugin.render(socket, name), nl=False)


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
@click.option(
    "--node",
    "--host-root",
    "node_root",
    default=None,
    metavar="DIR",
    help="Also judge the VMs against one node: its host root (/ on the node, as root) or a "
    "snapshot from `nfd-snp capture`: whether it runs SEV-SNP guests, the policy bits its "
    "KVM accepts and its firmware's ABI, and what the Plugin's node hook answers there.",
)
@click.option(
    "--plugins",
    is_flag=True,
    help="The cluster runs nfd-snp's Plugin (KubeVirt 1.9+, deploy/kubevirt/plugin.yaml) and "
    "the 1.9 instancetypes: options need no sidecar, and the node hook's rules apply.",
)
def kubevirt_check_vm(files, sidecar_configmap, vep_field, node_root, plugins):
    """Check the SEV-SNP request of VM and VMI manifests, offline.

    Reads VirtualMachines and VirtualMachineInstances (YAML or JSON, '-' for stdin), applies
    the instancetype and preference a VM names as KubeVirt would (nfd-snp's are known;
    pass other definitions as further files), and checks it with the rules of KubeVirt's
    admission webhook and the code the sidecar runs; it names the path that serves each
    VM (Plugins, hook sidecar, KubeVirt's defaults) and, with --node, what the Plugin's node
    hook would answer on that node. Exit status: 0 when every VM gets
    SEV-SNP, 1 when one would not (each reason on its own line), 2 on unreadable input or a
    VM that cannot be checked from it.

    \b
      nfd-snp kubevirt check-vm deploy/kubevirt/vm-snp.yaml
      kubectl get vm my-vm -o yaml | nfd-snp kubevirt check-vm -
      nfd-snp kubevirt check-vm my-vm.yaml --node ./node7-snapshot
      nfd-snp kubevirt check-vm --plugins my-vm.yaml --host-root ./node7-snapshot
    """
    from nfd_snp.kubevirt import check_vm as kubevirt_check

    objects = []
    for name in files:
        with click.open_file(name, "rb") as handle:
            data = handle.read(kubevirt_check.MAX_INPUT_BYTES + 1)
        objects += kubevirt_check.load_documents(data, "stdin" if name == "-" else name)
    node = node_view = None
    if node_root is not None:
        from nfd_snp.kubevirt.node_hook import NodeView
        from nfd_snp.probe import probe_report

        # A KubeVirt node has no host libvirt; what the VM needs is the node's own facts.
        config = settings.build({"host_root": (node_root, "--node"), "libvirt": ("off", "--node")})
        report = probe_report(config).report
        node_view = NodeView.from_report(report, config.ttl, time.time())
        node = (node_root, node_view.facts)
    results = kubevirt_check.check_documents(
        objects,
        configmap=sidecar_configmap,
        vep_field=vep_field,
        node=node,
        plugins=plugins,
        node_view=node_view,
    )
    click.echo(kubevirt_check.render(results), nl=False)
    click.get_current_context().exit(kubevirt_check.exit_status(results))


def main() -> None:
    cli(prog_name="nfd-snp")


if __name__ == "__main__":
    main()
