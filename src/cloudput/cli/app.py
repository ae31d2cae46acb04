"""The root ``cloudput`` app, and the single error boundary that maps errors to exit codes.

Every command module registers here; nothing else prints errors or calls ``sys.exit``.
"""

from __future__ import annotations

import logging
import sys
import traceback

import typer

try:  # typer >= 0.2x vendors click; earlier releases raise click's own exceptions
    from typer._click import exceptions as click_exceptions
except ImportError:  # pragma: no cover - depends on the installed typer
    from click import exceptions as click_exceptions  # type: ignore[no-redef]

from cloudput import __version__
from cloudput.cli import abort as abort_cmd
from cloudput.cli import cleanup, doctor, plumbing, records, resume, upload, verify
from cloudput.errors import EXIT_INTERNAL, EXIT_SIGINT, EXIT_USAGE, CloudputError
from cloudput.logs import redact

log = logging.getLogger(__name__)

_EXITS = tuple({typer.Exit, getattr(click_exceptions, "Exit", typer.Exit)})
_ABORTS = tuple({typer.Abort, getattr(click_exceptions, "Abort", typer.Abort)})

app = typer.Typer(
    name="cloudput",
    help="Resumable, verified bulk uploads to S3, Google Cloud Storage and Azure Blob Storage.",
    no_args_is_help=True,
    add_completion=True,
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
app.command("upload", cls=upload.UploadCommand)(upload.upload)
app.command("resume")(resume.resume)
app.command("abort")(abort_cmd.abort)
app.command("list")(records.list_uploads)
app.command("show")(records.show)
app.command("cleanup")(cleanup.cleanup)
app.command("verify")(verify.verify)
app.command("doctor")(doctor.doctor)
app.command("init")(plumbing.init)
app.command("part-url")(plumbing.part_url)
app.command("complete")(plumbing.complete)


def _version(value: bool) -> None:
    if value:
        print(f"cloudput {__version__}")
        raise typer.Exit(0)


@app.callback()
def root(
    version: bool = typer.Option(
        False,
        "--version",
        callback=_version,
        is_eager=True,
        help="Print the version and exit.",
    ),
) -> None:
    """Resumable, verified bulk uploads to S3, GCS and Azure."""


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code; the one place that turns errors into
    messages and exit codes."""
    args = sys.argv[1:] if argv is None else list(argv)
    debug = "--debug" in args
    try:
        result = app(args=args, prog_name="cloudput", standalone_mode=False)
    except _EXITS as exc:
        return exc.exit_code or 0
    except _ABORTS:
        sys.stderr.write("cloudput: interrupted\n")
        return EXIT_SIGINT
    except click_exceptions.ClickException as exc:
        if exc.format_message():
            sys.stderr.write(f"cloudput: error: {exc.format_message()}\n")
        return exc.exit_code if exc.exit_code else EXIT_USAGE
    except CloudputError as exc:
        if debug:
            traceback.print_exc()
        sys.stderr.write(f"cloudput: error: {redact(str(exc))}\n")
        return exc.exit_code
    except BrokenPipeError:
        _silence_stdout()
        return EXIT_INTERNAL
    except KeyboardInterrupt:
        sys.stderr.write("cloudput: interrupted\n")
        return EXIT_SIGINT
    except Exception as exc:  # the boundary: anything unexpected is exit 1
        if debug:
            traceback.print_exc()
        sys.stderr.write(
            f"cloudput: internal error: {redact(type(exc).__name__ + ': ' + str(exc))} "
            "(run again with --debug for a traceback)\n"
        )
        return EXIT_INTERNAL
    # Without standalone mode, click returns the code of a raised Exit.
    return result if isinstance(result, int) else 0


def _silence_stdout() -> None:
    """After a closed pipe (``| head``), drop what is still buffered for stdout."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
