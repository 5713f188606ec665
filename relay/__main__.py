"""`python -m relay …`: worker, Knock sandbox, and operator commands."""

from __future__ import annotations

import csv
import json
import logging
import os
import sys
from datetime import UTC, datetime
from typing import NoReturn, TextIO

import click
import redis
from redis.sentinel import MasterNotFoundError

from relay import __version__
from relay.audit import record_action
from relay.config import ConfigError, Settings, load_settings, production_warnings, whole_number_or
from relay.directory import directory_csv_rows, read_directory_csv
from relay.logs import configure_logging
from relay.redis_connection import read_topology
from relay.services import Services
from relay.store import DEAD, REPLAYABLE, STATUSES, Search, address_searched, ms_from


def exit_with_problems(problems: list[str]) -> NoReturn:
    for problem in problems:
        click.echo(f"configuration error: {problem}", err=True)
    sys.exit(1)


def settings_or_exit(*, needs_knock: bool = True) -> Settings:
    try:
        return load_settings(needs_knock=needs_knock)
    except ConfigError as error:
        exit_with_problems(error.problems)


def store_services() -> Services:
    """For operator commands: they read and write Redis only, so REDIS_URL is all they need."""
    return Services(settings_or_exit(needs_knock=False))


class RelayCommands(click.Group):
    """Every command: a Redis that cannot be reached is one line and exit status 1, not a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except redis.RedisError as error:
            raise click.ClickException(redis_problem(error)) from error


def redis_problem(error: redis.RedisError) -> str:
    """One line: which Redis (never its password) and what went wrong."""
    try:
        settings = load_settings(needs_knock=False)
    except ConfigError:
        settings = Settings(redis_url=os.environ.get("REDIS_URL") or Settings.redis_url)
    if settings.redis_sentinels:
        sentinels = ",".join(f"{host}:{port}" for host, port in settings.redis_sentinels)
        where = f"the primary the sentinels {sentinels} name {settings.redis_sentinel_master!r}"
        if isinstance(error, MasterNotFoundError):
            return (f"Redis at {where}: no sentinel named one (all unreachable, or a wrong REDIS_SENTINEL_PASSWORD, "
                    "REDIS_SENTINEL_TLS or REDIS_SENTINEL_MASTER)")  # fmt: skip
        return f"Redis at {where}: {error}"
    return f"Redis at {settings.redis_url.split('@')[-1]}: {error}"


@click.group(cls=RelayCommands)
@click.version_option(__version__, prog_name="relay")
def cli() -> None:
    """Knock Email Relay."""


def _threads_default() -> int:
    return whole_number_or("RELAY_WORKER_THREADS", 4)


@cli.command()
@click.option(
    "--threads",
    type=int,
    default=_threads_default,
    show_default="RELAY_WORKER_THREADS or 4",
    help="Deliveries forwarded at once by this process.",
)
@click.option(
    "--shutdown-grace",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds SIGTERM waits for in-flight deliveries.",
)
def worker(threads: int, shutdown_grace: float) -> None:
    """Forward queued deliveries to Knock."""
    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))
    from relay.worker import run_worker

    services = Services(settings_or_exit(), patient=True)
    for warning in production_warnings(services.settings, role="worker"):
        logging.getLogger("relay.worker").warning("configuration: %s", warning)
    refusals = services.persistence.check_at_start()
    if refusals:
        exit_with_problems(refusals)
    try:
        run_worker(services, threads=threads, shutdown_grace_seconds=shutdown_grace)
    except ConfigError as error:
        exit_with_problems(error.problems)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True, envvar="RELAY_SANDBOX_HOST")
@click.option("--port", type=int, default=8081, show_default=True, envvar="RELAY_SANDBOX_PORT")
@click.option(
    "--api-key",
    default="sandbox-key",
    show_default=True,
    envvar="RELAY_SANDBOX_API_KEY",
    help="The x-api-key it accepts.",
)
@click.option(
    "--id-field",
    type=click.Choice(["id", "prospectId"]),
    default="id",
    show_default=True,
    help="Name of the id in POST /prospect answers.",
)
def sandbox(host: str, port: int, api_key: str, id_field: str) -> None:
    """Run the local Knock sandbox."""
    from werkzeug.serving import run_simple

    from relay.knock.sandbox import create_sandbox

    configure_logging(os.environ.get("LOG_LEVEL", "INFO"))  # its request lines too: JSON like the relay's
    run_simple(host, port, create_sandbox(api_key, id_field), threaded=True)


@cli.command()
@click.option("--timeout", type=float, default=4.0, show_default=True)
def healthcheck(timeout: float) -> None:
    """Exit 0 when a relay process in this container answers /healthz.

    Tries the web server (PORT, 8000), the worker's port (RELAY_WORKER_PORT, 8001) and the
    sandbox (RELAY_SANDBOX_PORT, 8081) on the loopback, so one image check fits every role.
    """
    import urllib.error
    import urllib.request

    ports = {
        os.environ.get("PORT") or "8000",
        os.environ.get("RELAY_WORKER_PORT") or "8001",
        os.environ.get("RELAY_SANDBOX_PORT") or "8081",
    }
    for port in sorted(ports - {"0"}):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=timeout) as answer:
                if answer.status == 200:
                    click.echo(f"healthy on port {port}")
                    return
        except (urllib.error.URLError, OSError):
            continue
    raise click.ClickException("no relay process answers /healthz")


@cli.group()
def config() -> None:
    """Configuration."""


@config.command("check")
def config_check() -> None:
    """Validate the environment; one line per problem, exit 1 if any; warnings for what is missing."""
    settings = settings_or_exit()
    for warning in production_warnings(settings):
        click.echo(f"warning: {warning}", err=True)
    click.echo(f"configuration ok ({settings.environment}); Knock at {settings.knock_base_url}")


@cli.group()
def deliveries() -> None:
    """Inspect and replay deliveries."""


@deliveries.command("list")
@click.option("--status", type=click.Choice(STATUSES), default=None)
@click.option("--prospect-id", default=None)
@click.option("--message-id", default=None)
@click.option("--limit", type=int, default=20, show_default=True)
def deliveries_list(status: str | None, prospect_id: str | None, message_id: str | None, limit: int) -> None:
    """Newest deliveries first, one JSON object per line."""
    services = store_services()
    search = Search(status=status, prospect_id=prospect_id, message_id=message_id)
    for delivery in services.store.search(search, limit=limit).deliveries:
        click.echo(json.dumps(delivery.public()))


@deliveries.command("reindex")
def deliveries_reindex() -> None:
    """Enter every delivery in the search indexes (once, for records stored by an earlier version)."""
    entered = store_services().store.reindex()
    click.echo(f"entered {entered} deliveries in the search indexes")


@deliveries.command("show")
@click.argument("delivery_id")
def deliveries_show(delivery_id: str) -> None:
    """One delivery as JSON: status, reason, attempts, last error, sender authentication, ..."""
    delivery = store_services().store.get(delivery_id)
    if delivery is None:
        raise click.ClickException(f"no delivery {delivery_id!r}")
    click.echo(json.dumps(delivery.public(), indent=2))


@deliveries.command("resolve")
@click.argument("delivery_id")
@click.option("--prospect-id", required=True, help="The Knock prospect the email belongs to.")
@click.option("--agent-username", default=None, help="The agent to log it for (else the directory's, then Knock's).")
def deliveries_resolve(delivery_id: str, prospect_id: str, agent_username: str | None) -> None:
    """Give an unmatched delivery its prospect and queue it (the prospect id as given: this command
    needs only Redis, so it does not ask Knock whether the prospect exists, as the API and console do)."""
    from relay.errors import RelayError
    from relay.ids import path_id_problem
    from relay.intake import resolve_delivery

    for option, value in (("--prospect-id", prospect_id), ("--agent-username", agent_username)):
        problem = path_id_problem(value) if value is not None else None
        if problem:
            raise click.BadParameter(f"not a usable id: it {problem}", param_hint=option)
    try:
        resolve_delivery(store_services(), delivery_id, prospect_id, agent_username, check_prospect=False)
    except RelayError as error:
        raise click.ClickException(error.message) from error
    click.echo(f"resolved {delivery_id}: queued for prospect {prospect_id}")


@deliveries.command("replay")
@click.argument("delivery_id", required=False)
@click.option("--all-dead", is_flag=True, help="Replay every dead delivery.")
@click.option(
    "--status",
    type=click.Choice(REPLAYABLE),
    default=None,
    help="Replay every delivery the filters find: dead ones, or ignored ones (only those ignored as spam).",
)
@click.option("--prospect-id", default=None)
@click.option("--provider", default=None)
@click.option("--address", default=None, help="The sender or a recipient.")
@click.option("--since", type=click.DateTime(), default=None, help="Received at or after (UTC).")
@click.option("--until", type=click.DateTime(), default=None, help="Received at or before (UTC).")
@click.option("--last-error", default=None, help="Text the last error contains.")
def deliveries_replay(
    delivery_id: str | None,
    all_dead: bool,
    status: str | None,
    prospect_id: str | None,
    provider: str | None,
    address: str | None,
    since: datetime | None,
    until: datetime | None,
    last_error: str | None,
) -> None:
    """Queue one dead delivery (or one ignored as spam), or every one the filters find (--status and
    any of the others), again. Each is recorded among the console's recent actions; replaying twice
    queues nothing new."""
    from relay.errors import RelayError
    from relay.intake import replay_delivery
    from relay.redrive import Redrive, matching, replay_ids

    for option, value in (("--prospect-id", prospect_id), ("--provider", provider), ("--address", address),
                          ("--last-error", last_error)):  # fmt: skip
        if value is not None and not value.strip():
            raise click.BadParameter("give a value, or leave the option out (empty would match everything)",
                                     param_hint=option)  # fmt: skip
    filters = (all_dead, status, prospect_id, provider, address, since, until, last_error)
    if delivery_id and any(value not in (None, False) for value in filters):
        raise click.UsageError("give a delivery id or the filters (--status …), not both")
    services = store_services()
    if all_dead or status:
        search = Search(
            status=DEAD if all_dead else status,
            prospect_id=prospect_id,
            provider=provider.lower() if provider else None,
            address=address_searched(address),
            since_ms=ms_from(since.replace(tzinfo=UTC)) if since else None,
            until_ms=ms_from(until.replace(tzinfo=UTC)) if until else None,
        )
        ids = [delivery.id for delivery in matching(services, Redrive(search, last_error))]
        with click.progressbar(ids, label=f"replaying {search.status} deliveries", file=sys.stderr) as progress:
            replayed = replay_ids(services, progress, "cli")
        click.echo(f"replayed {len(replayed)} deliveries")
    elif delivery_id:
        try:
            replay_delivery(services, delivery_id)
        except RelayError as error:
            raise click.ClickException(error.message) from error
        record_action(services.redis, "cli", "replay", delivery_id)
        click.echo(f"replayed {delivery_id}")
    else:
        raise click.UsageError("give a delivery id, or --status dead (with filters), or --all-dead")


@cli.group()
def directory() -> None:
    """The prospect and agent directory."""


@directory.command("import")
@click.argument("csv_file", type=click.File("r"))
def directory_import(csv_file: TextIO) -> None:
    """Import prospects from CSV with columns prospectId,email[,agentUsername].

    Several rows with one prospectId add up its emails. Bad rows (no id or address, or an id that
    cannot go into a URL path: empty, '.', '..', control characters, white space) are reported by
    line number and skipped; the exit status is 1 when there were any. Cells are read as `export`
    writes them: a `'` before a formula character is taken off.
    """
    services = store_services()
    try:
        found = read_directory_csv(csv_file)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    for line, problem in found.bad_rows:
        click.echo(f"line {line}: {problem}; skipped", err=True)
    if found.unknown_columns:
        click.echo(f"columns not read: {', '.join(found.unknown_columns)}", err=True)
    with click.progressbar(found.prospects.items(), label="importing prospects", file=sys.stderr) as progress:
        for prospect_id, (emails, agent) in progress:
            services.directory.merge_prospect(prospect_id, emails, agent)
    bad = len(found.bad_lines)
    click.echo(f"imported {len(found.prospects)} prospects" + (f"; {bad} bad rows skipped" if bad else ""))
    if bad:
        sys.exit(1)


@directory.command("reply-address")
@click.argument("prospect_id")
@click.option("--mailbox", default=None, help="A leasing-side mailbox (default: RELAY_REPLY_MAILBOX).")
def directory_reply_address(prospect_id: str, mailbox: str | None) -> None:
    """The address a prospect's replies should go to: the mailbox with the prospect's reply tag,
    signed with the first RELAY_REPLY_TAG_SECRET when there is one."""
    from relay.ids import path_id_problem
    from relay.reply_tags import reply_address_of

    problem = path_id_problem(prospect_id)
    if problem:
        raise click.BadParameter(f"not a usable id: it {problem}", param_hint="PROSPECT_ID")
    try:
        found = reply_address_of(settings_or_exit(needs_knock=False), prospect_id, mailbox)
    except ValueError as error:
        raise click.ClickException(f"no reply address: {error}") from error
    click.echo(found["address"])


@directory.command("export")
def directory_export() -> None:
    """Every prospect as CSV (prospectId,email,agentUsername), one row per address: what `import` reads.

    A cell a spreadsheet would run as a formula (starting with =, +, -, @, tab or CR) is written
    with a `'` in front, which `import` takes off again.
    """
    services = store_services()
    csv.writer(sys.stdout, lineterminator="\n").writerows(directory_csv_rows(services.directory))


@cli.command()
def check() -> None:
    """Configuration, Redis (reachable, durable) and Knock (reachable, key accepted): one line each.

    Exit status 1 when any of them fails.
    """
    from relay.knock.client import KnockError

    failed = False

    def report(ok: bool, line: str) -> None:
        nonlocal failed
        failed |= not ok
        click.echo(f"{'ok  ' if ok else 'FAIL'} {line}")

    try:
        settings = load_settings()
    except ConfigError as error:
        for problem in error.problems:
            report(False, f"configuration: {problem}")
        sys.exit(1)
    warnings = production_warnings(settings)
    report(True, f"configuration ({settings.environment})" + (f"; {len(warnings)} warnings" if warnings else ""))
    services = Services(settings)
    try:
        services.redis.ping()
        persistence = services.persistence.report()
        durable = "durable" if persistence.durable else "NOT durable: " + "; ".join(persistence.problems)
        report(services.persistence.acceptable(persistence), f"redis reachable, {durable}")
        topology = read_topology(services.redis)
        enough = sum(r["state"] == "online" for r in topology.replicas) >= settings.redis_min_replicas
        wanted = f"; RELAY_REDIS_MIN_REPLICAS is {settings.redis_min_replicas}" if settings.redis_min_replicas else ""
        report(enough, f"redis {topology.line()}{wanted}")
    except redis.RedisError as error:
        report(False, f"redis unreachable: {error}")
    try:
        services.knock.get_prospect("relay-check-no-such-prospect")
        report(True, f"knock at {settings.knock_base_url} answers")
    except KnockError as error:
        # An unknown prospect is what a working key gets; 401/403 is a key Knock refuses.
        accepted = error.status == 404
        report(accepted, f"knock at {settings.knock_base_url}: " + ("key accepted" if accepted else error.message))
    if failed:
        sys.exit(1)


@cli.group("console")
def console_group() -> None:
    """The operator console at /console."""


@console_group.command("hash-password")
@click.argument("name")
@click.password_option(help="The operator's password (asked twice when not given).")
def hash_password(name: str, password: str) -> None:
    """Print a RELAY_CONSOLE_USERS entry, NAME:HASH, for an operator account."""
    from werkzeug.security import generate_password_hash

    if ":" in name or "," in name or not name.strip():
        raise click.BadParameter("a name without ':' or ','", param_hint="NAME")
    if len(password) < 12:
        raise click.BadParameter("at least 12 characters", param_hint="password")
    click.echo(f"{name}:{generate_password_hash(password)}")


@cli.command()
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--with-body", is_flag=True, help="Include the (base64) body.")
def quarantine(limit: int, with_body: bool) -> None:
    """Authenticated webhook posts that could not be read, newest first, one JSON object per line."""
    from relay.quarantine import Quarantine

    services = store_services()
    for entry in Quarantine(services.redis).entries(limit):
        if not with_body:
            entry.pop("body", None)
        click.echo(json.dumps(entry))


if __name__ == "__main__":
    cli()
