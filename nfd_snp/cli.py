"""The `nfd-snp` command: a thin click group over the library.

Exit codes (DESIGN.md): 0 ok / SEV-SNP ready, 1 not ready or refused, 2 usage or input
error. Errors are one line on stderr; a traceback only with -v, and only for bugs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import click

from nfd_snp import __version__
from nfd_snp.errors import NfdSnpError

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


def open_report(host_root: str, sample: str | None, libvirt: bool, libvirt_timeout: float):
    from nfd_snp.checks import evaluate
    from nfd_snp.host import open_host
    from nfd_snp.probe import probe

    root = samples_dir() / sample if sample else Path(host_root)
    state = click.get_current_context().find_object(State) or State()
    with open_host(root, libvirt=libvirt, libvirt_timeout=libvirt_timeout) as host:
        state.info(f"probing {root}{' (snapshot)' if host.snapshot else ''}")
        facts = probe(host)
    return evaluate(facts)


def host_options(func):
    """--host-root / --sample / libvirt options shared by the commands that probe."""
    options = [
        click.option(
            "--host-root",
            default="/",
            show_default=True,
            envvar="NFD_SNP_HOST_ROOT",
            metavar="DIR",
            help="Read the host below DIR: / on a node, /host in a container, or a "
            "snapshot directory written by `nfd-snp capture` (replayed, no devices touched).",
        ),
        click.option(
            "--sample",
            type=click.Choice(sample_names()),
            help="Check a bundled sample node instead of this host.",
        ),
        click.option(
            "--libvirt/--no-libvirt",
            default=True,
            show_default=True,
            help="Ask the host's libvirt for its domain capabilities (live hosts only).",
        ),
        click.option(
            "--libvirt-timeout",
            type=click.FloatRange(0.1, 300),
            default=10.0,
            show_default=True,
            metavar="SECONDS",
            help="Give up on a libvirt daemon that does not answer.",
        ),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@cli.command()
@host_options
@click.option(
    "--json", "as_json", is_flag=True, help="Machine-readable report (docs/check-json.md)."
)
@click.option("--failures", is_flag=True, help="Show only failed and unknown checks.")
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

    if sample and host_root != "/":
        raise click.UsageError("--sample and --host-root exclude each other")
    report = open_report(host_root, sample, libvirt, libvirt_timeout)
    if as_json:
        click.echo(render_json(report), nl=False)
    else:
        click.echo(render_table(report, failures_only=failures), nl=False)
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
    "--libvirt/--no-libvirt",
    default=True,
    show_default=True,
    help="Include libvirt's domain capabilities.",
)
def capture(out, host_root, libvirt):
    """Save every input the probe reads from this host into the directory OUT.

    OUT then replays with `nfd-snp check --host-root OUT`: for support bundles and test
    corpora. Run as root, or the CPUID/MSR/PSP sources are recorded as unreadable. Only
    QEMU processes' command lines are kept from /proc.
    """
    from nfd_snp.capture import capture as do_capture

    do_capture(out, host_root, libvirt=libvirt)
    click.echo(f"captured {host_root} into {out}; replay with: nfd-snp check --host-root {out}")


def main() -> None:
    cli(prog_name="nfd-snp")


if __name__ == "__main__":
    main()
