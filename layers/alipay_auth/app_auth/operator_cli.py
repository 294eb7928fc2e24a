"""``alipay-auth``: the operator's command line for a deployed stack or the local one.

Where the stack is (the first that applies):

- ``--stack NAME``: a deployed CloudFormation stack; its Outputs and the callback function's
  environment are read through boto3 (your usual AWS credentials and region);
- ``--local``: the local stack of ``make serve``, found through the file it writes
  (``.local-stack/env.json`` in this directory or a parent; ``--local-file`` names another);
- otherwise the environment variables the functions read (TABLE_NAME, SECRET_ARN, ...).

Results go to stdout (``--json`` for scripts), progress and errors to stderr, one line each and
never a stack trace for an expected failure. Tokens are masked (``alipay_v3.mask``); keys, codes
and secrets are never printed. Exit codes: see ``EXIT_CODES``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import textwrap
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from alipay_v3 import AlipayError, ConfigError
from alipay_v3.diagnose import Report

from . import refresh
from .container import Container, build_container
from .errors import (
    AppAuthError,
    ConcurrentUpdate,
    EncryptionError,
    InvalidRequest,
    NotConfigured,
    NotFound,
    StorageError,
)
from .importing import ImportReport
from .local_stack import (
    LOCAL_STACK_FILE,
    LOCAL_STACK_FILE_VARIABLE,
    NotALocalStackFile,
    find_local_stack_file,
    named_local_stack_file,
    read_local_stack_file,
)
from .operations import STATUSES, Operations, ReplaySummary, TokenView, import_keys
from .outcomes import ANSWERS, CallbackOutcome
from .settings import Settings
from .token_store import TokenRecord
from .verification import Verified, VerifyReport

PROG = "alipay-auth"
_APP_ID = re.compile(r"[0-9]{6,32}")
EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_NOT_NOW = 4
EXIT_AWS = 5
EXIT_INTERRUPTED = 130
EXIT_CODES = {
    EXIT_OK: "success",
    EXIT_FAILED: "the operation failed: Alipay refused or did not answer, the key set was refused, a "
    "refresh failed, messages were left on the replay queue, verify found tokens Alipay says no longer "
    "work (or could not ask about some)",
    EXIT_USAGE: "usage or configuration problem: bad arguments, no stack found, a file that cannot be read, "
    "an Alipay configuration that does not load",
    EXIT_NOT_FOUND: "no authorization stored for that merchant app",
    EXIT_NOT_NOW: "not possible in the token's state: revoked or needing re-authorization, or another "
    "worker holds it right now (try again)",
    EXIT_AWS: "AWS failed: the stack, table, key, secret or queue could not be read or written "
    "(credentials, permissions, network); an exchanged result was parked for replay",
    EXIT_INTERRUPTED: "interrupted",
}

# Any credentials do for the local stand-ins (DynamoDB Local wants letters and digits); the file holds none.
_LOCAL_CREDENTIALS = {"aws_access_key_id": "LOCALOPERATOR", "aws_secret_access_key": "localoperator"}
_AWS_CONFIG = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 3, "mode": "standard"})
# Stack output -> the function environment variable it stands for.
_OUTPUT_VARIABLES = {
    "TableName": "TABLE_NAME",
    "TokenStoreId": "TOKEN_STORE_ID",
    "SealedTableName": "SEALED_TABLE_NAME",
    "SecretArn": "SECRET_ARN",
    "StateSecretArn": "STATE_SECRET_ARN",
    "KmsKeyArn": "TOKEN_KMS_KEY_ID",
    "EventBusName": "EVENT_BUS_NAME",
    "ReplayQueueUrl": "REPLAY_QUEUE_URL",
    "CallbackUrl": "CALLBACK_URL",
}
_FUNCTION_RESOURCE = "CallbackFunction"  # its environment is the superset the operations need

EXAMPLES = """\
examples:
  alipay-auth --stack alipay-app-auth-prod keys import --app-id 2021004100000001 \\
      --private-key app_private_key.txt --alipay-public-key alipay_public_key.txt
  alipay-auth --stack alipay-app-auth-prod link create --ref customer-42
  alipay-auth --local tokens list
  alipay-auth --local tokens list --status needs_reauth --json | jq -r '.[].auth_app_id'
  alipay-auth --local tokens show 2021000000000099
  alipay-auth --local tokens refresh 2021000000000099
  alipay-auth --local tokens revoke 2021000000000099 --reason "contract ended"
  echo "$CODE" | alipay-auth --local exchange-code - --ref customer-42
  alipay-auth --local replay
"""


def _exit_code_help() -> str:
    return "exit codes:\n" + "\n".join(
        textwrap.fill(f"{code:>3}  {text}", width=100, subsequent_indent="       ")
        for code, text in EXIT_CODES.items()
    )


class Failure(Exception):
    """An expected failure, phrased for the operator, with its exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


# -- where the stack is --------------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """A stack to operate on: the functions' environment and how to make AWS clients for it."""

    description: str
    environment: dict[str, str]
    client: Callable[[str], Any]
    api_url: str | None = None
    authorize_url: str | None = None

    def settings(self) -> Settings:
        try:
            return Settings.from_env(self.environment)
        except RuntimeError as exc:
            raise Failure(EXIT_USAGE, f"{self.description}: {exc}") from None


def local_target(path: Path | None, environ: Mapping[str, str] | None = None) -> Target:
    found = path or named_local_stack_file(environ) or find_local_stack_file(Path.cwd())
    if found is None:
        raise Failure(
            EXIT_USAGE,
            f"no local stack found ({LOCAL_STACK_FILE} in this directory or above): start one with "
            "`make serve`, or give --local-file",
        )
    try:
        local = read_local_stack_file(found)
    except OSError as exc:
        raise Failure(EXIT_USAGE, f"cannot read {found}: {exc.strerror}") from None
    except NotALocalStackFile:
        raise Failure(EXIT_USAGE, f"{found} is not a local stack file written by `make serve`") from None
    if not local.running():
        raise Failure(
            EXIT_USAGE,
            f"the local stack in {found} is not running any more (process {local.pid} is gone): start it "
            "with `make serve`",
        )
    session = boto3.session.Session(region_name=local.region, **_LOCAL_CREDENTIALS)

    def client(service: str) -> Any:
        return session.client(service, endpoint_url=local.endpoint(service), config=_AWS_CONFIG)

    api_url = local.api_url
    return Target(
        f"local stack ({found})",
        local.environment,
        client,
        api_url=api_url,
        authorize_url=f"{api_url}/authorize" if api_url else None,
    )


def stack_target(name: str, session: Any, say: Callable[[str], None]) -> Target:
    """A deployed stack: its Outputs, then the callback function's environment over them."""
    cloudformation = session.client("cloudformation", config=_AWS_CONFIG)
    say(f"reading stack {name} ...")
    try:
        stacks = cloudformation.describe_stacks(StackName=name)["Stacks"]
    except ClientError as exc:
        if _aws_code(exc) == "ValidationError":
            raise Failure(EXIT_NOT_FOUND, f"no stack named {name} in this account and region") from None
        raise Failure(EXIT_AWS, f"the stack {name} could not be read ({_aws_code(exc)})") from None
    outputs = {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}
    environment = {var: outputs[key] for key, var in _OUTPUT_VARIABLES.items() if outputs.get(key)}
    try:
        function = cloudformation.describe_stack_resource(
            StackName=name, LogicalResourceId=_FUNCTION_RESOURCE
        )["StackResourceDetail"]["PhysicalResourceId"]
        variables = session.client("lambda", config=_AWS_CONFIG).get_function_configuration(
            FunctionName=function
        )["Environment"]["Variables"]
    except (ClientError, BotoCoreError, KeyError) as exc:
        # The outputs name every resource; the function adds settings (environment, refresh days).
        say(f"the callback function's settings could not be read ({_aws_code(exc)}); using the outputs only")
    else:
        environment.update({k: v for k, v in variables.items() if v})
    return Target(
        f"stack {name}",
        environment,
        lambda service: session.client(service, config=_AWS_CONFIG),
        api_url=outputs.get("CallbackUrl", "").removesuffix("/callback") or None,
        authorize_url=outputs.get("AuthorizeUrl"),
    )


def environment_target(environ: Mapping[str, str]) -> Target:
    if not environ.get("TABLE_NAME") or not environ.get("SECRET_ARN"):
        raise Failure(
            EXIT_USAGE,
            "which stack? Give --stack NAME (deployed), --local (make serve), or set the functions' "
            "environment variables (TABLE_NAME, SECRET_ARN, STATE_SECRET_ARN, TOKEN_KMS_KEY_ID, ...)",
        )
    return Target(
        "environment variables", dict(environ), lambda service: boto3.client(service, config=_AWS_CONFIG)
    )


# -- arguments -----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """Usage errors exit with EXIT_USAGE, and never quote a code given on the command line."""

    secrets: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {_redact(message, self.secrets)}\n")


def _common_options(parser: argparse.ArgumentParser, *, suppress: bool) -> None:
    """Options that may come before or after the command (defaults only on the top parser)."""
    default: Any = argparse.SUPPRESS if suppress else None
    where = parser.add_argument_group("where the stack is")
    where.add_argument("--stack", metavar="NAME", default=default, help="a deployed CloudFormation stack")
    where.add_argument(
        "--local",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help=f"the local stack of `make serve` (found through {LOCAL_STACK_FILE} or ${LOCAL_STACK_FILE_VARIABLE})",
    )
    where.add_argument(
        "--local-file", type=Path, metavar="FILE", default=default, help="the local stack's file"
    )
    where.add_argument("--region", metavar="REGION", default=default, help="AWS region of --stack")
    where.add_argument("--profile", metavar="PROFILE", default=default, help="AWS profile for --stack")
    output = parser.add_argument_group("output")
    output.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="print the result as JSON",
    )
    output.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS if suppress else False,
        help="no progress on stderr",
    )


def build_parser(secrets: Sequence[str] = ()) -> argparse.ArgumentParser:
    class Parser(_Parser):
        pass

    Parser.secrets = tuple(secrets)
    formatter = argparse.RawDescriptionHelpFormatter
    epilog = EXAMPLES + "\n" + _exit_code_help()
    parser = Parser(
        prog=PROG,
        description="Operate the merchant app authorizations of an alipay-app-auth stack.",
        epilog=epilog,
        formatter_class=formatter,
    )
    _common_options(parser, suppress=False)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    def command(
        parent: Any, name: str, help_text: str, handler: Callable[..., int] | None = None
    ) -> argparse.ArgumentParser:
        sub: argparse.ArgumentParser = parent.add_parser(
            name, help=help_text, description=help_text, epilog=epilog, formatter_class=formatter
        )
        _common_options(sub, suppress=True)
        if handler is not None:
            sub.set_defaults(handler=handler, needs_stack=True)
        return sub

    keys = commands.add_parser("keys", help="the ISV app's Alipay keys", formatter_class=formatter)
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", parser_class=Parser)
    imported = command(
        keys_commands,
        "import",
        "check the files from the Alipay console (as `alipay-v3 keys check` does) and write them to the "
        "stack's secret; a set with an ERROR is refused",
        _keys_import,
    )
    imported.add_argument("--app-id", required=True, help="the ISV app's APPID")
    imported.add_argument("--private-key", type=Path, required=True, metavar="FILE", help="应用私钥")
    imported.add_argument(
        "--alipay-public-key", type=Path, metavar="FILE", help="支付宝公钥 (public-key mode)"
    )
    imported.add_argument(
        "--app-public-key", type=Path, metavar="FILE", help="应用公钥, to check it pairs with the private key"
    )
    imported.add_argument(
        "--app-cert", type=Path, metavar="FILE", help="appCertPublicKey_<APPID>.crt (certificate mode)"
    )
    imported.add_argument("--alipay-cert", type=Path, metavar="FILE", help="alipayCertPublicKey_RSA2.crt")
    imported.add_argument("--alipay-root-cert", type=Path, metavar="FILE", help="alipayRootCert.crt")
    imported.add_argument(
        "--encrypt-key", type=Path, metavar="FILE", help="the AES key (接口内容加密密钥), optional"
    )
    imported.add_argument(
        "--gateway",
        help="production, sandbox or a URL (default: the secret's current one, else the stack's environment)",
    )
    imported.add_argument("--dry-run", action="store_true", help="check only; do not write the secret")
    keys.set_defaults(handler=lambda args, target: _usage(keys), needs_stack=False)

    link = commands.add_parser("link", help="authorization links", formatter_class=formatter)
    link_commands = link.add_subparsers(dest="link_command", metavar="COMMAND", parser_class=Parser)
    created = command(link_commands, "create", "print a new authorization link for a merchant", _link_create)
    created.add_argument("--ref", help="your reference for the merchant, stored with its token")
    link.set_defaults(handler=lambda args, target: _usage(link), needs_stack=False)

    tokens = commands.add_parser("tokens", help="the stored authorizations", formatter_class=formatter)
    token_commands = tokens.add_subparsers(dest="tokens_command", metavar="COMMAND", parser_class=Parser)
    listed = command(token_commands, "list", "every stored authorization, tokens not shown", _tokens_list)
    listed.add_argument("--status", choices=STATUSES, help="only authorizations in this status")
    which = listed.add_mutually_exclusive_group()
    which.add_argument(
        "--unclaimed",
        action="store_true",
        help="only authorizations no reference ties to a customer (they came by notification or a "
        "console invitation): tie one with tokens claim",
    )
    which.add_argument(
        "--ref", help="only the authorizations tied to this reference of yours (an index, no scan)"
    )
    shown = command(token_commands, "show", "one authorization, tokens masked", _tokens_show)
    shown.add_argument("app_id", metavar="APP_ID", type=_app_id, help="the merchant's auth_app_id")
    shown.add_argument(
        "--live", action="store_true", help="also ask Alipay now whether the token works and what it may do"
    )
    verified = command(
        token_commands,
        "verify",
        "ask Alipay about stored tokens (at the refresher's pace): keep what each may do, and mark "
        "needs_reauth those Alipay says no longer work",
        _tokens_verify,
    )
    verified.add_argument(
        "app_ids", nargs="*", metavar="APP_ID", type=_app_id, help="merchant apps (default with --all)"
    )
    verified.add_argument("--all", action="store_true", help="every token still served")
    imported = command(
        token_commands,
        "import",
        "bring the authorizations you already hold (JSON Lines, or CSV with a header: auth_app_id, "
        "app_auth_token, app_refresh_token, optional user_id, isv_ref, re_expires_in or "
        "refresh_token_expires_at, obtained_at): each checked with Alipay, a newer one never overwritten; "
        "run it again after an interruption",
        _tokens_import,
    )
    imported.add_argument("file", metavar="FILE", type=Path, help="the rows; keep it mode 0600")
    exported = command(
        token_commands,
        "export",
        "write the served authorizations to a new file (JSON Lines, mode 0600) that tokens import reads",
        _tokens_export,
    )
    exported.add_argument("--output", required=True, type=Path, metavar="FILE", help="a new file")
    exported.add_argument(
        "--include-secrets", action="store_true", help="also the token values (a backup, or a move)"
    )
    imported.add_argument("--dry-run", action="store_true", help="check every row with Alipay, write nothing")
    imported.add_argument(
        "--allow-world-readable", action="store_true", help="read a file that others may read too"
    )
    claimed = command(
        token_commands,
        "claim",
        "tie an authorization that came with no reference to your customer",
        _tokens_claim,
    )
    claimed.add_argument("app_id", metavar="APP_ID", type=_app_id, help="the merchant's auth_app_id")
    claimed.add_argument(
        "--ref", required=True, help="your reference for the merchant (1-128 of A-Z a-z 0-9 _ . : @ -)"
    )
    refreshed = command(token_commands, "refresh", "rotate a token now, due or not", _tokens_refresh)
    refreshed.add_argument("app_id", metavar="APP_ID", type=_app_id, help="the merchant's auth_app_id")
    revoked = command(
        token_commands,
        "revoke",
        "stop serving and rotating a token until the merchant authorizes again (the grant at Alipay "
        "stays: the merchant cancels it on their side)",
        _tokens_revoke,
    )
    revoked.add_argument("app_id", metavar="APP_ID", type=_app_id, help="the merchant's auth_app_id")
    revoked.add_argument("--reason", default="revoked by an operator", help="recorded as last_error")
    tokens.set_defaults(handler=lambda args, target: _usage(tokens), needs_stack=False)

    exchanged = command(
        commands,
        "exchange-code",
        "exchange an app_auth_code obtained by hand and store the tokens, as the callback would",
        _exchange_code,
    )
    exchanged.add_argument("code", metavar="CODE", help="the app_auth_code; '-' reads it from stdin")
    exchanged.add_argument("--ref", help="your reference for the merchant, stored with its token")

    replay = command(
        commands,
        "replay",
        "store the results parked on the replay queue after a storage failure (idempotent)",
        _replay,
    )
    replay.add_argument(
        "--max-messages", type=_positive_int, default=100, metavar="N", help="at most N messages (100)"
    )
    parser.set_defaults(handler=lambda args, target: _usage(parser), needs_stack=False)
    return parser


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text[:20]!r}") from None
    if not 1 <= value <= 10000:
        raise argparse.ArgumentTypeError("must be between 1 and 10000")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _code_in_argv(argv: Sequence[str]) -> list[str]:
    """Every word after exchange-code that could be the code, so that no error message can quote it."""
    if "exchange-code" not in argv:
        return []
    after = argv[argv.index("exchange-code") + 1 :]
    return [arg for arg in after if not arg.startswith("-")]


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in secrets:
        if len(secret) >= 4:
            text = text.replace(secret, "<redacted>")
    return text


# -- running -------------------------------------------------------------------------------------


class Console:
    """stdout for results, stderr for progress (unless quiet) and errors."""

    def __init__(self, *, quiet: bool) -> None:
        self.quiet = quiet

    def out(self, text: str) -> None:
        print(text, flush=True)

    def progress(self, text: str) -> None:
        if not self.quiet:
            print(f"{PROG}: {text}", file=sys.stderr, flush=True)

    def error(self, text: str) -> None:
        print(f"{PROG}: {text}", file=sys.stderr, flush=True)


def main(
    argv: Sequence[str] | None = None,
    *,
    environ: Mapping[str, str] | None = None,
    session_factory: Callable[..., Any] | None = None,
) -> int:
    """The console script. ``environ`` and ``session_factory`` (boto3 Session) are for tests."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    secrets = _code_in_argv(args_list)
    args = build_parser(secrets).parse_args(args_list)
    console = Console(quiet=args.quiet)
    args.console = console
    try:
        target = _resolve(args, environ, session_factory) if args.needs_stack else None
        result: int = args.handler(args, target)
        return result
    except Failure as failure:
        console.error(_redact(failure.message, secrets))
        return failure.exit_code
    except KeyboardInterrupt:
        console.error(
            "interrupted; an exchange or refresh on its way may have completed: check with tokens show"
        )
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the promise is: no stack traces; the message could quote secrets
        exit_code, message = _explain(exc)
        console.error(_redact(message, secrets))
        return exit_code


def _resolve(
    args: argparse.Namespace, environ: Mapping[str, str] | None, session_factory: Callable[..., Any] | None
) -> Target:
    environ = os.environ if environ is None else environ
    if args.local or args.local_file:
        if args.stack:
            raise Failure(EXIT_USAGE, "give --stack or --local, not both")
        return local_target(args.local_file, environ)
    stack = args.stack or environ.get("ALIPAY_AUTH_STACK")
    if stack:
        make_session = session_factory or boto3.session.Session
        try:
            session = make_session(region_name=args.region, profile_name=args.profile)
        except BotoCoreError as exc:  # e.g. an unknown profile
            raise Failure(EXIT_USAGE, f"AWS session: {exc}") from None
        if not session.region_name:
            raise Failure(
                EXIT_USAGE,
                f"which region is the stack {stack} in? Give --region (the one `sam deploy` used, in "
                "samconfig.toml), or set AWS_REGION or a region in your AWS profile",
            )
        return stack_target(stack, session, args.console.progress)
    return environment_target(environ)


def _explain(exc: Exception) -> tuple[int, str]:
    """The exit code and one line for a failure that reached the top."""
    if isinstance(exc, NotFound):
        return EXIT_NOT_FOUND, exc.message
    if isinstance(exc, ConcurrentUpdate):
        return EXIT_NOT_NOW, f"{exc.message} (another worker changed it; try again)"
    if isinstance(exc, InvalidRequest):
        if exc.code in ("not-active", "already-claimed"):
            return EXIT_NOT_NOW, exc.message
        if exc.code in ("state-rejected", "state-used", "state-expired"):
            return EXIT_FAILED, exc.message
        return EXIT_USAGE, exc.message
    if isinstance(exc, NotConfigured):
        return EXIT_USAGE, exc.message
    if isinstance(exc, StorageError | EncryptionError):
        return EXIT_AWS, f"{exc.message} [{exc.code}]"
    if isinstance(exc, AppAuthError):
        return EXIT_FAILED, f"{exc.message} [{exc.code}]"
    if isinstance(exc, ConfigError):
        return EXIT_USAGE, (
            f"the Alipay configuration in the stack's secret does not load: {exc.message}; "
            "put a working set there with `alipay-auth keys import`"
        )
    if isinstance(exc, AlipayError):
        return EXIT_FAILED, f"the call to Alipay failed [{exc.code}]: {exc.message}"
    if isinstance(exc, ClientError | BotoCoreError):
        return EXIT_AWS, f"AWS call failed ({_aws_code(exc)}); check credentials, region and permissions"
    return EXIT_FAILED, f"unexpected error ({type(exc).__name__}); this is a bug in {PROG}, please report it"


def _aws_code(exc: BaseException) -> str:
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "ClientError")
    return type(exc).__name__


def _operations(target: Target) -> Operations:
    # The pace at Alipay (imports, verification, refreshes) is the stack's when its environment says
    container: Container = build_container(
        target.settings(),
        client=target.client,
        refresh_policy=refresh.RefreshPolicy.from_env(target.environment),
    )
    return Operations(container)


# -- formatting ----------------------------------------------------------------------------------


def format_time(value: float | None) -> str | None:
    """UTC, to the second: the same in every operator's terminal."""
    if value is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


def record_dict(record: TokenRecord) -> dict[str, Any]:
    """A token item for --json: metadata only, times as ISO 8601 UTC."""
    return {
        "auth_app_id": record.auth_app_id,
        "status": str(record.status),
        "isv_ref": record.isv_ref,
        "previous_isv_ref": record.previous_isv_ref,
        "out_biz_no": record.out_biz_no,
        "isv_app_id": record.isv_app_id or None,
        "user_id": record.user_id or None,
        "version": record.version,
        "authorized_at": format_time(record.authorized_at),
        "obtained_at": format_time(record.obtained_at),
        "refreshed_at": format_time(record.refreshed_at),
        "due_at": format_time(record.due_at),
        "token_expires_at": format_time(
            None if record.expires_in is None else record.obtained_at + record.expires_in
        ),
        "refresh_token_expires_at": format_time(
            None if record.re_expires_in is None else record.obtained_at + record.re_expires_in
        ),
        "updated_at": format_time(record.updated_at),
        "failures": record.failures,
        "last_error": record.last_error,
        "auth_methods": list(record.auth_methods) or None,
        "auth_start": format_time(record.auth_start),
        "auth_end": format_time(record.auth_end),
        "is_by_app_auth": record.is_by_app_auth,
        "checked_at": format_time(record.checked_at),
        "checked_status": record.checked_status,
    }


def view_dict(view: TokenView) -> dict[str, Any]:
    shown = record_dict(view.record)
    shown["app_auth_token"] = view.app_auth_token
    shown["app_refresh_token"] = view.app_refresh_token
    if view.unreadable:
        shown["unreadable"] = view.unreadable
    if view.live is not None:
        shown["live_status"] = view.live.status.value
        shown["live_auth_methods"] = list(view.live.auth_methods)
        shown["live_auth_start"] = format_time(view.live.auth_start)
        shown["live_auth_end"] = format_time(view.live.auth_end)
        shown["live_is_by_app_auth"] = view.live.is_by_app_auth
    if view.live_error:
        shown["live_error"] = view.live_error
    return shown


_LIST_COLUMNS = (
    ("AUTH_APP_ID", "auth_app_id"),
    ("STATUS", "status"),
    ("REF", "isv_ref"),
    ("OBTAINED", "obtained_at"),
    ("DUE", "due_at"),
    ("LAST_ERROR", "last_error"),
)


def render_table(rows: Sequence[Mapping[str, Any]]) -> str:
    cells = [[title for title, _ in _LIST_COLUMNS]]
    cells += [[str(row.get(key) or "-") for _, key in _LIST_COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(_LIST_COLUMNS))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in cells
    )


def render_details(shown: Mapping[str, Any]) -> str:
    width = max(len(k) for k in shown)
    return "\n".join(f"{key.ljust(width)}  {'-' if value is None else value}" for key, value in shown.items())


def _emit(args: argparse.Namespace, data: Any, text: str) -> None:
    args.console.out(json.dumps(data, indent=2, ensure_ascii=False) if args.json else text)


# -- commands ------------------------------------------------------------------------------------


def _read_key_file(path: Path, flag: str) -> str:
    try:
        text = path.read_text(encoding="utf-8-sig")  # the console's .txt files may start with a BOM
    except OSError as exc:
        raise Failure(EXIT_USAGE, f"cannot read {flag} {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise Failure(
            EXIT_USAGE, f"{flag} {path} is not text; give the PEM or base64 file from the console"
        ) from None
    return text.strip()


def _current_gateway(secretsmanager: Any, secret_id: str) -> str | None:
    """The gateway of the configuration in the secret now (e.g. the emulator's), if it has one."""
    try:
        current = json.loads(secretsmanager.get_secret_value(SecretId=secret_id)["SecretString"])
    except (ClientError, BotoCoreError, ValueError, KeyError, TypeError):
        return None
    gateway = current.get("gateway") if isinstance(current, dict) else None
    return gateway if isinstance(gateway, str) and gateway else None


def keys_config(args: argparse.Namespace) -> dict[str, str]:
    """The configuration JSON from the console's files, one flag per file."""
    has_public_key = args.alipay_public_key is not None
    certs = [args.app_cert, args.alipay_cert, args.alipay_root_cert]
    if not has_public_key and not any(certs):
        raise Failure(
            EXIT_USAGE,
            "give --alipay-public-key (public-key mode) or --app-cert, --alipay-cert and --alipay-root-cert "
            "(certificate mode), as chosen for the app in the console",
        )
    config = {"app_id": args.app_id.strip(), "private_key": _read_key_file(args.private_key, "--private-key")}
    for flag, name in (
        ("--alipay-public-key", "alipay_public_key"),
        ("--app-public-key", "app_public_key"),
        ("--app-cert", "app_cert"),
        ("--alipay-cert", "alipay_cert"),
        ("--alipay-root-cert", "alipay_root_cert"),
        ("--encrypt-key", "encrypt_key"),
    ):
        path = getattr(args, name)
        if path is not None:
            config[name] = _read_key_file(path, flag)
    return config


def _keys_import(args: argparse.Namespace, target: Target) -> int:
    console: Console = args.console
    config = keys_config(args)
    secret_id = target.environment.get("SECRET_ARN")
    if not secret_id:
        raise Failure(EXIT_USAGE, f"{target.description} names no secret (SECRET_ARN / output SecretArn)")
    secretsmanager = target.client("secretsmanager")
    config["gateway"] = (
        args.gateway
        or _current_gateway(secretsmanager, secret_id)
        or target.environment.get("ALIPAY_ENVIRONMENT", "production")
    )
    console.progress(f"checking the key set for app {config['app_id']} ...")
    report, written = import_keys(secretsmanager, secret_id, config, dry_run=args.dry_run)
    if args.json:
        _emit(args, {**report.to_dict(), "written": written, "secret": secret_id.rsplit(":", 1)[-1]}, "")
    else:
        console.out(report.render())
    if not report.ok:
        console.error(f"refused: {_refusal(report)}; the secret was not changed")
        return EXIT_FAILED
    if written:
        console.progress(
            f"written to {secret_id.rsplit(':', 1)[-1]}; running functions read it again on their next "
            "cold start or certificate change"
        )
    else:
        console.progress("dry run: the key set passes the checks; nothing was written")
    return EXIT_OK


def _refusal(report: Report) -> str:
    """The most specific ERROR first: ``config-rejected`` only repeats what the others explain."""
    errors = sorted(report.errors, key=lambda f: f.code == "config-rejected")
    more = f" (and {len(errors) - 1} more ERROR above)" if len(errors) > 1 else ""
    return f"{errors[0].code}: {errors[0].message}{more}"


def _link_create(args: argparse.Namespace, target: Target) -> int:
    link = _operations(target).create_link(args.ref)
    short = f"{target.authorize_url}?state={link.state}" if target.authorize_url else None
    data = {
        "url": link.url,
        "authorize_url": short,
        "b_alipay_url": link.b_alipay_url,
        "expires_at": format_time(link.expires_at),
        "ref": link.isv_ref,
    }
    _emit(args, data, link.url)
    if not args.json:
        if short:
            args.console.progress(f"the same through the stack's API (shorter): {short}")
        args.console.progress(
            f"valid until {data['expires_at']}, for one authorization; no QR code is drawn (that would "
            "need a new dependency): paste the link into any QR generator you trust"
        )
    return EXIT_OK


def _tokens_list(args: argparse.Namespace, target: Target) -> int:
    operations = _operations(target)
    say = args.console.progress
    records = list(
        operations.list_tokens(
            status=args.status,
            unclaimed=args.unclaimed,
            ref=args.ref,
            on_page=lambda n: say(f"{n} authorization(s) read ..."),
        )
    )
    records.sort(key=lambda r: (r.due_at is None, r.due_at or 0.0, r.auth_app_id))
    rows = [record_dict(r) for r in records]
    _emit(args, rows, render_table(rows) if rows else "no authorizations stored")
    return EXIT_OK


def _app_id(value: str) -> str:
    """A merchant's auth_app_id as Alipay writes it (digits); anything else is a usage mistake."""
    if not _APP_ID.fullmatch(value):
        raise argparse.ArgumentTypeError(f"{value!r} is not a merchant app id (auth_app_id: digits)")
    return value


def _tokens_claim(args: argparse.Namespace, target: Target) -> int:
    record = _operations(target).claim(args.app_id, args.ref)
    _emit(args, record_dict(record), f"{record.auth_app_id} is tied to {record.isv_ref}")
    return EXIT_OK


def _tokens_import(args: argparse.Namespace, target: Target) -> int:
    path: Path = args.file
    try:
        mode = path.stat().st_mode & 0o777
    except OSError as exc:
        raise Failure(EXIT_USAGE, f"cannot read {path}: {exc.strerror}") from None
    if mode & 0o077 and not args.allow_world_readable:
        raise Failure(
            EXIT_USAGE,
            f"{path} holds tokens and others may read it (mode {mode:04o}): `chmod 600 {path}` first, "
            "or give --allow-world-readable",
        )
    say = args.console.progress
    started = time.monotonic()

    def progress(report: ImportReport) -> None:
        if report.rows % 100 == 0:
            rate = report.rows / max(time.monotonic() - started, 1e-6)
            say(
                f"{report.rows} rows ({rate:.1f}/s): "
                + ", ".join(f"{k} {v}" for k, v in sorted(report.counts.items()))
            )

    report = _operations(target).import_file(path, dry_run=args.dry_run, progress=progress)
    lines = [
        f"{'would import' if args.dry_run and k == 'imported' else k}: {v}"
        for k, v in sorted(report.counts.items())
    ]
    lines += [
        f"line {e['line']}: {e.get('auth_app_id') or '-'}: {e['reason']}"
        for e in report.invalid + report.failed
    ]
    if report.expiring:
        lines.append(
            f"{len(report.expiring)} with a refresh token near its end: rotated first, served while valid"
        )
    if not args.dry_run:
        lines.append(f"done; delete the file safely: shred -u {path}")
    _emit(args, report.as_dict(), "\n".join(lines) or "no rows")
    return EXIT_OK if not report.invalid and not report.failed else EXIT_FAILED


def _tokens_export(args: argparse.Namespace, target: Target) -> int:
    count = _operations(target).export(args.output, include_secrets=args.include_secrets)
    what = (
        "with their tokens: keep it as you would the keys; shred -u it when done"
        if args.include_secrets
        else "without tokens"
    )
    _emit(
        args,
        {"exported": count, "file": str(args.output)},
        f"{count} authorization(s) written to {args.output}, {what}",
    )
    return EXIT_OK


def _tokens_verify(args: argparse.Namespace, target: Target) -> int:
    if bool(args.app_ids) == args.all:
        raise Failure(EXIT_USAGE, "give merchant app ids, or --all for every token still served")
    say = args.console.progress
    started = time.monotonic()

    def progress(report: VerifyReport) -> None:
        done = sum(len(apps) for apps in report.outcomes.values())
        rate = done / max(time.monotonic() - started, 1e-6)
        say(
            f"{done} asked ({rate:.1f}/s): "
            + ", ".join(f"{k} {len(v)}" for k, v in sorted(report.outcomes.items()))
        )

    report = _operations(target).verify(args.app_ids, progress=progress)
    lines = [f"{outcome}: {', '.join(apps)}" for outcome, apps in sorted(report.outcomes.items())]
    _emit(args, report.outcomes, "\n".join(lines) or "no token to verify")
    return (
        EXIT_OK if not report.count(Verified.INVALID) and not report.count(Verified.FAILED) else EXIT_FAILED
    )


def _tokens_show(args: argparse.Namespace, target: Target) -> int:
    view = _operations(target).describe(args.app_id, live=args.live)
    shown = view_dict(view)
    _emit(args, shown, render_details(shown))
    if view.unreadable:
        args.console.error(f"the tokens could not be opened: {view.unreadable}")
    return EXIT_OK


# What the operator is told, and the exit code, for each ending of a refresh.
_REFRESH_ANSWERS = {
    refresh.REFRESHED: (EXIT_OK, "refreshed"),
    refresh.RACED: (EXIT_OK, "another worker rotated it at the same time; its pair is stored"),
    refresh.SKIPPED: (EXIT_NOT_NOW, "skipped: another worker holds it right now; try again in a few minutes"),
    refresh.FAILED: (EXIT_FAILED, "the refresh failed; it stays scheduled and is retried with backoff"),
    refresh.NEEDS_REAUTH: (
        EXIT_FAILED,
        "Alipay says the grant is dead: the merchant must authorize again (link create)",
    ),
    refresh.ROTATION_UNAVAILABLE: (
        EXIT_FAILED,
        "the refresh token is dead but Alipay says the token works: it is served and no longer rotated; "
        "a new authorization (link create) makes it rotate again",
    ),
    refresh.QUARANTINED: (
        EXIT_FAILED,
        "the refresh failed once more: the token stays quarantined (served, not retried); see last error",
    ),
    refresh.PARKED: (
        EXIT_FAILED,
        "Alipay rotated it but the table refused the new pair: it waits on the replay queue (replay)",
    ),
    refresh.DEFERRED: (EXIT_NOT_NOW, "not started: too little time left; try again"),
}


def _tokens_refresh(args: argparse.Namespace, target: Target) -> int:
    operations = _operations(target)
    result = operations.refresh(
        args.app_id, starting=lambda: args.console.progress(f"refreshing {args.app_id} at Alipay ...")
    )
    data = {
        "outcome": result.outcome,
        "before": record_dict(result.before),
        "after": record_dict(result.after),
    }
    exit_code, says = _REFRESH_ANSWERS[result.outcome]
    text = (
        f"{says}: version {result.before.version} -> {result.after.version}, "
        f"due {format_time(result.after.due_at) or '-'}"
    )
    if result.after.last_error and result.outcome != refresh.REFRESHED:
        text += f", last error {result.after.last_error}"
    _emit(args, data, text)
    return exit_code


def _tokens_revoke(args: argparse.Namespace, target: Target) -> int:
    record, revoked_now = _operations(target).revoke(args.app_id, args.reason)
    says = (
        "revoked: no longer served or rotated until the merchant authorizes again"
        if revoked_now
        else f"was revoked already ({record.last_error or 'no reason recorded'}); nothing changed"
    )
    _emit(args, record_dict(record), f"{record.auth_app_id} {says}")
    return EXIT_OK


# The exit code for each ending of a callback; what the operator is told is ``outcomes.ANSWERS``.
_EXCHANGE_EXIT = {
    CallbackOutcome.AUTHORIZED: EXIT_OK,
    CallbackOutcome.PARKED: EXIT_AWS,
    CallbackOutcome.IN_PROGRESS: EXIT_NOT_NOW,
    CallbackOutcome.CODE_SPENT: EXIT_FAILED,
    CallbackOutcome.UNCONFIRMED: EXIT_FAILED,
}


def _exchange_code(args: argparse.Namespace, target: Target) -> int:
    code = sys.stdin.readline().strip() if args.code == "-" else args.code.strip()
    if not code:
        raise Failure(EXIT_USAGE, "no code given")
    operations = _operations(target)
    args.console.progress("exchanging the code at Alipay ...")
    result = operations.exchange_code(code, args.ref)
    data = {
        "outcome": result.outcome.value,
        "auth_app_ids": list(result.auth_app_ids),
        "ref": result.isv_ref,
        "repeated": result.repeated,
        "fresh_link": result.fresh_link,
    }
    text = ANSWERS[result.outcome].operator_says
    if result.auth_app_ids:
        text += f": {', '.join(result.auth_app_ids)}"
    if result.repeated:
        text += " (this code was handled before; nothing was exchanged again)"
    _emit(args, data, text)
    if result.fresh_link and not args.json:
        args.console.progress(
            f"a new link was created for the merchant (the old one is used up): {result.fresh_link}"
        )
    return _EXCHANGE_EXIT[result.outcome]


def _replay(args: argparse.Namespace, target: Target) -> int:
    operations = _operations(target)
    args.console.progress("reading the replay queue ...")
    summary: ReplaySummary = operations.replay(max_messages=args.max_messages, progress=args.console.progress)
    data = {
        "messages": summary.messages,
        "replayed": summary.replayed,
        "skipped": summary.skipped,
        "failed": summary.failed,
    }
    if summary.messages == 0 and summary.failed == 0:
        text = "nothing to replay"
    else:
        text = (
            f"{summary.messages} message(s): stored {', '.join(summary.replayed) or '-'}; newer token kept "
            f"for {', '.join(summary.skipped) or '-'}; {summary.failed} left on the queue"
        )
    _emit(args, data, text)
    return EXIT_FAILED if summary.failed else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
