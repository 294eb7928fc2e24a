"""``alipay-v3``: call an Alipay v3 API, ask whether a merchant's token works, and explain a
configuration, from the command line.

Failures end with one paragraph on stderr that says what went wrong and what to check, and an
exit code per kind of failure (see ``EXIT_CODES``). Key material, AES keys, codes and tokens are
never printed: token fields in a response are masked on stdout (``--output`` saves them in full
to a file only the user can read), and secrets given on the command line are blanked out of
every message.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any, NoReturn

from .client import AlipayClient
from .config import AlipayConfig
from .diagnose import diagnose_json
from .errors import (
    AlipayApiError,
    AlipayError,
    ConfigError,
    DecryptError,
    MalformedResponseError,
    ResponseVerificationError,
    TransportError,
)
from .token_api import CHINA_TIME, AppAuthorization, TokenApi, mask

PROG = "alipay-v3"
EXIT_OK = 0
EXIT_FINDINGS = 1
EXIT_CONFIG = 2
EXIT_API = 3
EXIT_VERIFY = 4
EXIT_TRANSPORT = 5
EXIT_RESPONSE = 6
EXIT_INTERRUPTED = 130
# The command worked and its answer is "no", as for keys check. Not 4 (EXIT_VERIFY): a script that
# re-authorizes merchants on this code must never confuse Alipay's "invalid" with a response we
# could not verify, which says nothing about the token.
EXIT_TOKEN_INVALID = EXIT_FINDINGS
EXIT_CODES = {
    EXIT_OK: "success (keys check: no ERROR finding; tokens query: the token is valid)",
    EXIT_FINDINGS: "keys check found at least one ERROR; tokens query: Alipay says the token is invalid",
    EXIT_CONFIG: "usage or configuration problem: bad arguments, bad --data JSON, a config that does not load",
    EXIT_API: "Alipay answered with an error (code, HTTP status, trace id on stderr)",
    EXIT_VERIFY: "the response failed verification or decryption: its content was not used",
    EXIT_TRANSPORT: "no response (connection refused, reset, timeout); stderr says if it may have been processed",
    EXIT_RESPONSE: "a verified response that does not have the documented shape, or an unexpected error",
}
_KEYS_CHECK_EXIT_CODES = (
    "exit codes of keys check:\n  0  no ERROR finding\n  1  at least one ERROR\n  2  the file cannot be read"
)
_TOKENS_QUERY_EXIT_CODES = (
    "exit codes of tokens query:\n  0  the token is valid\n  1  Alipay says the token is invalid\n"
    "  3  Alipay answered with an error (AUTH_TOKEN_NOT_EXISTED: it holds no such token)\n"
    "  other codes as for call (alipay-v3 --help)"
)
# Request fields whose values are secrets (codes, tokens, keys): blanked out of any message.
_SECRET_NAME_PARTS = ("code", "token", "key", "secret", "password")
_REDACTED = "<redacted>"

EXAMPLES = """\
examples:
  # exchange an app_auth_code for the merchant's tokens, keeping them in a private file
  alipay-v3 call POST /v3/alipay/open/auth/token/app --config alipay.json \\
      --data '{"grant_type": "authorization_code", "code": "..."}' --output grant.json

  # the same, with AES content encryption (needs encrypt_key in the config)
  alipay-v3 call POST /v3/alipay/open/auth/token/app --config alipay.json --encrypt --data @body.json

  # a call on behalf of a merchant
  alipay-v3 call GET /v3/alipay/open/auth/token/app/query --config alipay.json \\
      --query app_auth_token=... --app-auth-token ...

  # does a merchant's app_auth_token still work? (exit 0 valid, 1 invalid; - reads it from stdin)
  alipay-v3 tokens query --config alipay.json --app-auth-token - --json < token.txt

  # explain a configuration, also one that does not load
  alipay-v3 keys check --config alipay.json
  alipay-v3 keys check --config alipay.json --json | jq '.findings[] | select(.level != "OK")'
"""


def _version() -> str:
    try:
        return metadata.version("alipay-app-auth")
    except metadata.PackageNotFoundError:  # e.g. inside the Lambda layer, which is not pip-installed
        return "unknown"


def _exit_code_help() -> str:
    return "exit codes:\n" + "\n".join(f"  {code}  {text}" for code, text in EXIT_CODES.items())


class _Parser(argparse.ArgumentParser):
    """argparse that blanks secrets out of its usage errors (they quote the offending arguments)."""

    secrets: Sequence[str] = ()

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {_redact(message, self.secrets)}\n")


def build_parser(secrets: Sequence[str] = ()) -> argparse.ArgumentParser:
    class Parser(_Parser):
        pass

    Parser.secrets = tuple(secrets)
    formatter = argparse.RawDescriptionHelpFormatter
    parser = Parser(
        prog=PROG,
        description="Call Alipay OpenAPI v3 endpoints and check keys and certificates.",
        epilog=EXAMPLES + "\n" + _exit_code_help(),
        formatter_class=formatter,
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser)

    call = commands.add_parser(
        "call",
        help="sign a request, send it, verify and decrypt the answer, print its JSON",
        description=textwrap.fill(
            "Sign a request with the app private key, send it, verify Alipay's signature on the answer, "
            "decrypt it if --encrypt, and print its JSON. Fields whose name ends in 'token' are masked on "
            "stdout; --output saves the full answer.",
            width=100,
        ),
        epilog=EXAMPLES + "\n" + _exit_code_help(),
        formatter_class=formatter,
    )
    call.add_argument(
        "method",
        metavar="METHOD",
        type=str.upper,
        choices=["GET", "POST", "PUT", "PATCH", "DELETE"],
        help="GET, POST, PUT, PATCH or DELETE",
    )
    call.add_argument("path", metavar="PATH", help="the API path, e.g. /v3/alipay/open/auth/token/app")
    call.add_argument(
        "--config", required=True, metavar="FILE", help="the configuration JSON (see keys check)"
    )
    call.add_argument("--data", metavar="JSON", help="the request body: a JSON object, or @FILE to read it")
    call.add_argument(
        "--query", action="append", default=[], metavar="K=V", help="a query parameter (repeatable)"
    )
    call.add_argument(
        "--app-auth-token", metavar="T", help="call on behalf of a merchant with its app_auth_token"
    )
    call.add_argument(
        "--encrypt", action="store_true", help="AES-encrypt the body and ask for an encrypted answer"
    )
    call.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="S",
        help="seconds to wait for the connection and for the answer (default: 3.05 and 10)",
    )
    call.add_argument(
        "--output", type=Path, metavar="FILE", help="also write the full, unmasked answer to FILE (mode 0600)"
    )
    call.set_defaults(handler=_call)

    keys = commands.add_parser(
        "keys",
        help="inspect keys and certificates",
        description="Inspect keys and certificates.",
        epilog=_KEYS_CHECK_EXIT_CODES,
        formatter_class=formatter,
    )
    keys_commands = keys.add_subparsers(dest="keys_command", metavar="COMMAND", parser_class=Parser)
    check = keys_commands.add_parser(
        "check",
        help="explain a configuration: formats, key pairs, certificates, expiry, common mistakes",
        description=textwrap.fill(
            "Explain a configuration, also one that does not load: key formats and sizes, whether the "
            "private key matches app_public_key or app_cert, certificate subjects, issuers, SNs and "
            "expiry, and the usual copy-and-paste mistakes, each with a fix. One line per finding, "
            "prefixed OK, WARN or ERROR. Key material is never printed; keys are named by fingerprint.",
            width=100,
        ),
        epilog=_KEYS_CHECK_EXIT_CODES,
        formatter_class=formatter,
    )
    check.add_argument("--config", required=True, metavar="FILE", help="the configuration JSON")
    check.add_argument("--json", action="store_true", help="print the report as JSON")
    check.set_defaults(handler=_keys_check)
    keys.set_defaults(handler=lambda args: _usage(keys))

    tokens = commands.add_parser(
        "tokens",
        help="ask Alipay about merchants' app_auth_tokens",
        description="Ask Alipay about merchants' app_auth_tokens.",
        epilog=_TOKENS_QUERY_EXIT_CODES,
        formatter_class=formatter,
    )
    tokens_commands = tokens.add_subparsers(dest="tokens_command", metavar="COMMAND", parser_class=Parser)
    query = tokens_commands.add_parser(
        "query",
        help="whether an app_auth_token works, for which app, since when, for which APIs",
        description=textwrap.fill(
            "Ask Alipay (token/app/query) about one app_auth_token: its status (valid or invalid), the "
            "merchant app and user it stands for, the APIs it may call and the authorization period. "
            "The status is the truth about whether the token works; auth_end and expires_in may disagree. "
            "The token itself is never printed.",
            width=100,
        ),
        epilog=_TOKENS_QUERY_EXIT_CODES,
        formatter_class=formatter,
    )
    query.add_argument("--config", required=True, metavar="FILE", help="the configuration JSON")
    query.add_argument(
        "--app-auth-token",
        required=True,
        metavar="T",
        help="the token to ask about; - reads it from stdin (keeps it out of the process list)",
    )
    query.add_argument("--json", action="store_true", help="print the answer as JSON")
    query.add_argument(
        "--encrypt", action="store_true", help="ask for an AES-encrypted answer (needs encrypt_key)"
    )
    query.add_argument(
        "--timeout",
        type=_positive_seconds,
        metavar="S",
        help="seconds to wait for the connection and for the answer (default: 3.05 and 10)",
    )
    query.set_defaults(handler=_tokens_query)
    tokens.set_defaults(handler=lambda args: _usage(tokens))
    parser.set_defaults(handler=lambda args: _usage(parser))
    return parser


def _positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text[:20]!r}") from None
    if not 0 < value <= 600:
        raise argparse.ArgumentTypeError("the timeout must be more than 0 and at most 600 seconds")
    return value


def _usage(parser: argparse.ArgumentParser) -> int:
    parser.print_help(sys.stderr)
    return EXIT_CONFIG


def _secrets_in_argv(argv: Sequence[str]) -> list[str]:
    """The --app-auth-token value, wherever it sits, so that no message can quote it."""
    found = []
    for index, arg in enumerate(argv):
        if arg == "--app-auth-token" and index + 1 < len(argv):
            found.append(argv[index + 1])
        elif arg.startswith("--app-auth-token="):
            found.append(arg.split("=", 1)[1])
    return found


def _redact(text: str, secrets: Sequence[str]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if len(secret) >= 4:  # shorter values would blank out ordinary words
            text = text.replace(secret, _REDACTED)
    return text


def _secret_values(value: Any, name: str = "") -> list[str]:
    """String values under secret-looking names anywhere in a request body."""
    if isinstance(value, Mapping):
        return [s for key, item in value.items() for s in _secret_values(item, str(key))]
    if isinstance(value, list):
        return [s for item in value for s in _secret_values(item, name)]
    if isinstance(value, str) and any(part in name.lower() for part in _SECRET_NAME_PARTS):
        return [value]
    return []


def _masked(value: Any, name: str = "") -> Any:
    """The response with every field named ``*token`` masked (``mask`` keeps 4 characters and the length)."""
    if isinstance(value, Mapping):
        return {key: _masked(item, str(key)) for key, item in value.items()}
    if isinstance(value, list):
        return [_masked(item, name) for item in value]
    if isinstance(value, str) and name.lower().endswith("token"):
        return mask(value)
    return value


class _Failure(Exception):
    """A failure already phrased for the user, with its exit code."""

    def __init__(self, exit_code: int, message: str) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.message = message


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    secrets = _secrets_in_argv(args_list)
    parser = build_parser(secrets)
    args = parser.parse_args(args_list)
    args.secrets = secrets
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except _Failure as failure:
        _fail(failure.message, args.secrets)
        return failure.exit_code
    except KeyboardInterrupt:
        _fail("interrupted; if a request was on its way, Alipay may have processed it", ())
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - the promise is: no stack traces, ever
        # Only the type: the message of an unexpected error could quote anything, secrets included.
        _fail(f"unexpected error ({type(exc).__name__}); this is a bug in alipay-v3, please report it", ())
        return EXIT_RESPONSE


def _fail(message: str, secrets: Sequence[str]) -> None:
    print(f"{PROG}: {_redact(message, secrets)}", file=sys.stderr)


# --- call ---------------------------------------------------------------------------------------


def _read_data(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    source = "--data"
    if text.startswith("@"):
        source = f"--data file {text[1:]}"
        try:
            text = Path(text[1:]).read_text(encoding="utf-8")
        except OSError as exc:
            raise _Failure(EXIT_CONFIG, f"cannot read {source}: {exc.strerror}.") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise _Failure(
            EXIT_CONFIG,
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno}, column {exc.colno}). Give a JSON "
            'object, e.g. \'{"grant_type": "authorization_code", "code": "..."}\', quoted for your shell.',
        ) from None
    if not isinstance(data, dict):
        raise _Failure(EXIT_CONFIG, f"{source} must be a JSON object ({{...}}), not {type(data).__name__}.")
    return data


def _read_query(pairs: Sequence[str]) -> dict[str, str]:
    query = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _Failure(EXIT_CONFIG, f"--query takes NAME=VALUE, got {name[:30]!r} without '='.")
        query[name] = value
    return query


def _call(args: argparse.Namespace) -> int:
    data = _read_data(args.data)
    query = _read_query(args.query)
    args.secrets = [*args.secrets, *_secret_values(data), *_secret_values(query)]
    if not args.path.startswith("/"):
        raise _Failure(EXIT_CONFIG, "PATH must start with '/', e.g. /v3/alipay/open/auth/token/app.")
    if "?" in args.path and query:
        raise _Failure(EXIT_CONFIG, "give the query either in PATH or with --query, not both.")
    config = _load_config(args)
    client = _client(config, args)
    try:
        response = client.call(
            args.method,
            args.path,
            data=data,
            query=query or None,
            app_auth_token=args.app_auth_token,
            encrypt=args.encrypt,
        )
    except AlipayError as exc:
        raise _Failure(*_explain(exc, config, args.config)) from None
    finally:
        client.session.close()

    if args.output is not None:
        _write_private(args.output, json.dumps(response.data, indent=2, ensure_ascii=False) + "\n")
    shown = _masked(response.data)
    print(json.dumps(shown, indent=2, ensure_ascii=False))
    if shown != response.data and args.output is None:
        print(f"{PROG}: token fields are masked; add --output FILE to save them in full.", file=sys.stderr)
    return EXIT_OK


def _write_private(path: Path, text: str) -> None:
    """The answer may hold tokens: create the file readable by its owner only."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # an existing file keeps its mode through O_TRUNC
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            file.write(text)
    except OSError as exc:
        # The call succeeded: say so, or the user might retry and spend a code twice.
        raise _Failure(
            EXIT_CONFIG,
            f"the call succeeded but --output {path} could not be written ({exc.strerror}); the answer was "
            "not saved. Do not repeat a code exchange: the code is spent.",
        ) from None


def _load_config(args: argparse.Namespace) -> AlipayConfig:
    try:
        config = AlipayConfig.from_file(args.config)
    except ConfigError as exc:
        raise _Failure(EXIT_CONFIG, _config_message(exc, args.config)) from None
    if args.encrypt and config.aes is None:
        raise _Failure(
            EXIT_CONFIG,
            f"--encrypt needs encrypt_key (the AES key from the console) in {args.config}.",
        )
    return config


def _client(config: AlipayConfig, args: argparse.Namespace) -> AlipayClient:
    if args.timeout:
        return AlipayClient(config, timeout=(args.timeout, args.timeout))
    return AlipayClient(config)


def _config_message(exc: ConfigError, path: str) -> str:
    return (
        f"configuration problem in {path}: {exc.message}. Run `alipay-v3 keys check --config {path}` for "
        "an explanation of every field."
    )


# What to check after each platform error code (protocol notes, section 2.4).
_API_HINTS = {
    "invalid-signature": (
        "Alipay could not verify the request signature: private_key must be the private half of the app "
        "public key (or app certificate) uploaded for this app in this environment, and the clock must be right"
    ),
    "missing-signature": "the request reached Alipay without a signature; a proxy may strip the Authorization header",
    "invalid-app-id": (
        "Alipay does not know this app_id on this gateway: check app_id, and the gateway (sandbox APPIDs start "
        'with 9021 and need "gateway": "sandbox")'
    ),
    "missing-app-cert-sn": "the app uses certificate mode: configure app_cert, alipay_cert and alipay_root_cert",
    "app-cert-not-exist": "app_cert is not this app's current certificate: download appCertPublicKey_<APPID>.crt again",
    "invalid-alipay-root-cert-sn": "alipay_root_cert is not the current alipayRootCert.crt: download it again",
    "decryption-error": "Alipay could not decrypt the body: encrypt_key must be the app's current AES key",
    "invalid-encrypt-type": "content encryption is not set up for this app in the console",
    "invalid-timestamp": "the request timestamp was refused: check this machine's clock",
    "illegal-timestamp": "the request timestamp was refused: check this machine's clock",
    "insufficient-isv-permissions": "the app lacks the permission (product) for this API in the console",
    # The query API's codes (protocol notes section 8.6).
    "AUTH_TOKEN_NOT_EXISTED": (
        "Alipay holds no such app_auth_token: it was never issued on this gateway, or is gone for good; "
        "the merchant has to authorize the app again"
    ),
    "AUTH_TOKEN_NOT_CONSISTENT": (
        "the token was granted to another app than app_id: ask with that app's configuration"
    ),
    "APP_NOT_ISV": "app_id is not a third-party (ISV) app; only ISV apps hold merchants' authorizations",
    "ILLEGAL_PARAM": "Alipay refused a parameter: check that the token was copied whole",
}


def _api_hint(exc: AlipayApiError) -> str:
    if exc.code in _API_HINTS:
        return _API_HINTS[exc.code]
    if exc.grant_dead:
        return (
            "the app_auth_code, refresh token or app_auth_token used is spent or invalid for good; the "
            "merchant has to authorize the app again (codes are single-use)"
        )
    if exc.retryable:
        return "this is a temporary failure; try again later"
    return "see the errCheck link for Alipay's explanation of this code"


def _explain(exc: AlipayError, config: AlipayConfig, path: str) -> tuple[int, str]:
    """The exit code and the paragraph for a failed call."""
    key_source = "alipay_cert" if config.cert_mode else "alipay_public_key"
    if isinstance(exc, AlipayApiError):
        links = [
            str(link.get("link")) for link in exc.links if isinstance(link, Mapping) and link.get("link")
        ]
        signed = (
            "The error response was signed by Alipay."
            if exc.verified
            else "The error response was NOT signed, so it may come from a proxy or gateway in between rather "
            "than from Alipay; do not act on it irreversibly."
        )
        return EXIT_API, (
            f"Alipay answered with an error: code {exc.code}, message {exc.alipay_message!r}, HTTP "
            f"{exc.http_status}, trace id {exc.trace_id or 'none'}"
            + (f", details: {links[0]}" if links else "")
            + f". {signed} What to check: {_api_hint(exc)}."
        )
    if isinstance(exc, DecryptError):
        return EXIT_VERIFY, (
            f"the response was verified but could not be decrypted: {exc.message}. Check encrypt_key in {path}: "
            "it must be the app's current AES key (接口内容加密密钥). Alipay did process the request."
        )
    if isinstance(exc, ResponseVerificationError):
        return EXIT_VERIFY, (
            f"the response failed verification and was not used: {exc.message}. Check {key_source} in {path} "
            "(`alipay-v3 keys check` explains it). Alipay may have processed the request all the same: an "
            "app_auth_code may be spent."
        )
    if isinstance(exc, TransportError):
        if exc.request_sent:
            outcome = (
                "If it exchanged a code or refreshed a token, that may already be spent: check the outcome "
                "before repeating it."
            )
        else:
            outcome = "Nothing was processed; it is safe to try again."
        return EXIT_TRANSPORT, (
            f"no response from {config.gateway}: {exc.message}. {outcome} Check the gateway in {path}, the "
            "network and proxies, and --timeout."
        )
    if isinstance(exc, MalformedResponseError):
        return EXIT_RESPONSE, f"the verified response does not have the documented shape: {exc.message}."
    if isinstance(exc, ConfigError) or exc.code == "invalid-config":
        return EXIT_CONFIG, f"configuration problem in {path}: {exc.message}."
    if exc.code == "invalid-argument":  # refused before anything was sent
        return EXIT_CONFIG, f"{exc.message}; nothing was sent."
    return EXIT_RESPONSE, f"the call failed: [{exc.code}] {exc.message}."


# --- tokens query -------------------------------------------------------------------------------


def _read_token(value: str) -> str:
    if value != "-":
        return value
    token = sys.stdin.readline().strip()
    if not token:
        raise _Failure(EXIT_CONFIG, "--app-auth-token - reads the token from stdin, which gave none.")
    return token


def _china_time_text(timestamp: int | None) -> str | None:
    if timestamp is None:
        return None
    return dt.datetime.fromtimestamp(timestamp, CHINA_TIME).isoformat(sep=" ")


def _authorization_fields(authorization: AppAuthorization, token: str) -> dict[str, Any]:
    """The answer as JSON: times in ISO 8601 with their +08:00 offset, the token masked."""
    return {
        "app_auth_token": mask(token),
        "status": authorization.status.value,
        "valid": authorization.valid,
        "auth_app_id": authorization.auth_app_id,
        "user_id": authorization.user_id,
        "auth_methods": list(authorization.auth_methods),
        "auth_start": _china_time_text(authorization.auth_start),
        "auth_end": _china_time_text(authorization.auth_end),
        "expires_in": authorization.expires_in,
        "is_by_app_auth": authorization.is_by_app_auth,
        "trace_id": authorization.trace_id,
    }


def _render_authorization(fields: Mapping[str, Any]) -> str:
    def text(value: Any) -> str:
        if value is None:
            return "-"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, list):
            return ", ".join(value) or "(none)"
        return str(value)

    width = max(len(name) for name in fields)
    return "\n".join(f"{name.ljust(width)}  {text(value)}" for name, value in fields.items())


def _tokens_query(args: argparse.Namespace) -> int:
    token = _read_token(args.app_auth_token)
    args.secrets = [*args.secrets, token]
    config = _load_config(args)
    client = _client(config, args)
    try:
        authorization = TokenApi(client).query(token, encrypt=args.encrypt)
    except AlipayError as exc:
        raise _Failure(*_explain(exc, config, args.config)) from None
    finally:
        client.session.close()
    fields = _authorization_fields(authorization, token)
    print(json.dumps(fields, indent=2, ensure_ascii=False) if args.json else _render_authorization(fields))
    return EXIT_OK if authorization.valid else EXIT_TOKEN_INVALID


# --- keys check ---------------------------------------------------------------------------------


def _keys_check(args: argparse.Namespace) -> int:
    try:
        text = Path(args.config).read_text(encoding="utf-8")
    except OSError as exc:
        raise _Failure(
            EXIT_CONFIG, f"cannot read configuration file {args.config}: {exc.strerror}."
        ) from None
    except UnicodeDecodeError:
        raise _Failure(
            EXIT_CONFIG, f"{args.config} is not UTF-8 text; the configuration is a JSON file."
        ) from None
    report = diagnose_json(text)
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, ensure_ascii=False))
    else:
        print(report.render())
    return EXIT_OK if report.ok else EXIT_FINDINGS


if __name__ == "__main__":
    sys.exit(main())
