"""Azure Blob Storage block blobs behind the provider contract (azure-storage-blob).

Owns credentials, block ids, Put Block / Put Block List and the translation of SDK
errors into ``cloudput.errors``. It never retries: the engine owns retry policy.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, BinaryIO, NoReturn
from urllib.parse import quote

import requests
from azure.core import MatchConditions
from azure.core.credentials import AzureSasCredential
from azure.core.exceptions import (
    AzureError,
    HttpResponseError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import RequestsTransport
from azure.storage.blob import (
    BlobBlock,
    BlobClient,
    BlobProperties,
    BlobSasPermissions,
    BlobServiceClient,
    BlockState,
    ContentSettings,
    StandardBlobTier,
    generate_blob_sas,
)
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from cloudput.errors import (
    BadDigestError,
    BucketNotFoundError,
    CloudputError,
    ConfigError,
    CredentialsError,
    IntegrityError,
    NotSupportedError,
    ThrottledError,
    TransientError,
    UploadGoneError,
    UsageError,
)
from cloudput.keys import Target
from cloudput.providers.base import (
    MIB,
    Body,
    Digest,
    Expected,
    Incomplete,
    ObjectSpec,
    PartSpec,
    PresignedRequest,
    ProviderLimits,
    ProviderSettings,
    Receipt,
    RemoteObject,
    Verified,
)

log = logging.getLogger(__name__)

# "Scalability and performance targets for Blob storage" and the Put Block / Put Blob
# REST references, service version 2019-12-12 and later.
RULE_SOURCE = (
    "Azure Blob Storage REST API 2019-12-12+: Put Block, Put Blob, Put Block List"
)
MAX_BLOCK_SIZE_BYTES = 4000 * MIB  # Put Block, version 2019-12-12+
MAX_COMMITTED_BLOCKS = 50_000  # Put Block List: blocks in one block blob
MAX_PUT_BLOB_SIZE_BYTES = 5000 * MIB  # Put Blob, version 2019-12-12+
MAX_BLOCK_ID_BYTES = 64  # Put Block: block id before base64 encoding
MIN_BLOCK_SIZE_BYTES = 1  # Azure sets no minimum block size
DEFAULT_BLOCK_SIZE_BYTES = 8 * MIB  # cloudput's default, as for S3
UNCOMMITTED_BLOCK_LIFETIME_DAYS = 7  # Put Block: staged blocks are dropped after a week

AZURE_LIMITS = ProviderLimits(
    name="Azure Blob Storage",
    strategy="multipart",
    is_sequential=False,
    min_part_size_bytes=MIN_BLOCK_SIZE_BYTES,
    max_part_size_bytes=MAX_BLOCK_SIZE_BYTES,
    max_parts=MAX_COMMITTED_BLOCKS,
    part_size_multiple_bytes=1,
    default_part_size_bytes=DEFAULT_BLOCK_SIZE_BYTES,
    max_single_size_bytes=MAX_PUT_BLOB_SIZE_BYTES,
    default_checksum="md5",
    checksums=("md5",),
    rule_source=RULE_SOURCE,
    unsupported={
        "acl": "Azure blobs have no ACL of their own: set the container's public "
        "access level, or share the blob with a SAS",
        "encryption": "Azure encrypts every blob; for your own key use "
        "--encryption-scope NAME (a scope set up on the account)",
    },
    storage_classes=("Hot", "Cool", "Cold", "Archive"),
    encryptions=("scope",),
)

PUBLIC_SUFFIX = "core.windows.net"
# Azurite's published development account (not a secret; documented by Microsoft).
DEV_ACCOUNT = "devstoreaccount1"
DEV_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/"
    "K1SZFPTOtr/KBHBeksoGMGw=="
)
DEV_BLOB_ENDPOINT = "http://127.0.0.1:10000/devstoreaccount1"

BLOCK_ID_TAG = "cloudput"
BLOCK_NUMBER_DIGITS = 6  # 50,000 blocks fit; every id of a blob has the same width
_SAFE_UPLOAD_ID = re.compile(r"^[0-9A-Za-z]{1,32}$")
_OUR_BLOCK_ID = re.compile(
    rf"^({BLOCK_ID_TAG}-[0-9A-Za-z]{{1,32}})-\d{{{BLOCK_NUMBER_DIGITS}}}$"
)

CREDENTIALS_HINT = (
    "set AZURE_STORAGE_CONNECTION_STRING, or AZURE_STORAGE_ACCOUNT with "
    "AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN (also AZURE_ACCOUNT_NAME / "
    "AZURE_ACCESS_KEY), or sign in for DefaultAzureCredential"
)
THROTTLE_STATUSES = (429, 503)


def block_prefix(upload_id: str) -> str:
    """The block-id prefix (the Azure "session") for one cloudput upload.

    cloudput's upload ids are 12 hex characters; anything else is hashed to that width,
    and an empty id gets a random one, so every id stays well under 64 bytes.
    """
    if not upload_id:
        token = secrets.token_hex(6)
    elif _SAFE_UPLOAD_ID.match(upload_id):
        token = upload_id
    else:
        token = hashlib.sha256(upload_id.encode("utf-8")).hexdigest()[:12]
    return f"{BLOCK_ID_TAG}-{token}"


def block_id(prefix: str, number: int) -> str:
    """The block id of part ``number``: one fixed width for the whole blob (BC-19).

    This is the id as cloudput handles it; the SDK base64-encodes it on the wire and
    ``get_block_list`` decodes it back, so the string round-trips exactly.
    """
    text = f"{prefix}-{number:0{BLOCK_NUMBER_DIGITS}d}"
    if len(text.encode("utf-8")) > MAX_BLOCK_ID_BYTES:
        raise UsageError(f"block id {text!r} is over {MAX_BLOCK_ID_BYTES} bytes")
    return text


def encoded_length(raw_id: str) -> int:
    """Length of a block id as the service stores it (base64 of the UTF-8 bytes)."""
    return len(base64.b64encode(raw_id.encode("utf-8")))


@dataclass(frozen=True)
class AzureAccess:
    """Where the blob service is and how to sign in; never printed."""

    endpoint: str
    account: str | None
    credential: Any
    account_key: str | None
    kind: str  # "connection-string" | "key" | "sas" | "default"


def parse_connection_string(text: str) -> dict[str, str]:
    """Split ``Key=Value;Key=Value`` (values may contain '=')."""
    fields: dict[str, str] = {}
    for item in text.split(";"):
        name, sep, value = item.strip().partition("=")
        if sep:
            fields[name.strip().lower()] = value.strip()
    return fields


def resolve_access(
    settings: ProviderSettings, env: Mapping[str, str], account_hint: str | None
) -> AzureAccess:
    """Find credentials in CONTRACT.md's order and the blob endpoint to use.

    Raises ``CredentialsError`` naming the variables when nothing is configured.
    """
    connection_string = env.get("AZURE_STORAGE_CONNECTION_STRING")
    if connection_string:
        return _access_from_connection_string(connection_string, settings, account_hint)
    account = env.get("AZURE_STORAGE_ACCOUNT") or env.get("AZURE_ACCOUNT_NAME")
    account = _agree_on_account(account, account_hint)
    if not account:
        raise CredentialsError(
            "no Azure storage account configured", hint=CREDENTIALS_HINT
        )
    endpoint = settings.endpoint_url or f"https://{account}.blob.{PUBLIC_SUFFIX}"
    key = env.get("AZURE_STORAGE_KEY") or env.get("AZURE_ACCESS_KEY")
    if key:
        credential = {"account_name": account, "account_key": key}
        return AzureAccess(endpoint, account, credential, key, "key")
    sas = env.get("AZURE_STORAGE_SAS_TOKEN")
    if sas:
        return AzureAccess(
            endpoint, account, AzureSasCredential(sas.lstrip("?")), None, "sas"
        )
    return AzureAccess(endpoint, account, _default_credential(), None, "default")


def _access_from_connection_string(
    text: str, settings: ProviderSettings, account_hint: str | None
) -> AzureAccess:
    fields = parse_connection_string(text)
    if fields.get("usedevelopmentstorage", "").lower() == "true":
        fields = {
            "accountname": DEV_ACCOUNT,
            "accountkey": DEV_ACCOUNT_KEY,
            "blobendpoint": DEV_BLOB_ENDPOINT,
        }
    account = _agree_on_account(fields.get("accountname"), account_hint)
    endpoint = settings.endpoint_url or fields.get("blobendpoint")
    if not endpoint and account:
        protocol = fields.get("defaultendpointsprotocol", "https")
        suffix = fields.get("endpointsuffix", PUBLIC_SUFFIX)
        endpoint = f"{protocol}://{account}.blob.{suffix}"
    if not endpoint:
        raise ConfigError(
            "AZURE_STORAGE_CONNECTION_STRING names neither AccountName nor "
            "BlobEndpoint",
            hint="copy the connection string from the account's Access keys page",
        )
    key = fields.get("accountkey")
    if key and account:
        credential = {"account_name": account, "account_key": key}
        return AzureAccess(endpoint, account, credential, key, "connection-string")
    sas = fields.get("sharedaccesssignature")
    if sas:
        signed = AzureSasCredential(sas.lstrip("?"))
        return AzureAccess(endpoint, account, signed, None, "sas")
    return AzureAccess(endpoint, account, _default_credential(), None, "default")


def _agree_on_account(configured: str | None, from_target: str | None) -> str | None:
    if configured and from_target and configured != from_target:
        raise ConfigError(
            f"the target names storage account {from_target!r} but the credentials are "
            f"for {configured!r}",
            hint="use an az:// target, or credentials for the account in the URL",
        )
    return configured or from_target


def _default_credential() -> Any:
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError as exc:
        raise CredentialsError(
            "no Azure storage key or SAS token configured and azure-identity is not "
            "installed for DefaultAzureCredential",
            hint=CREDENTIALS_HINT + "; or `pip install azure-identity`",
        ) from exc
    return DefaultAzureCredential()


def error_code_of(exc: HttpResponseError) -> str:
    """The service's error code (``x-ms-error-code``) as plain text, or ''."""
    code = getattr(exc, "error_code", None)
    if code is None and exc.response is not None:
        code = getattr(exc.response, "headers", {}).get("x-ms-error-code")
    return str(getattr(code, "value", code) or "")


def is_md5_mismatch(exc: HttpResponseError) -> bool:
    """Azure answers Md5Mismatch; Azurite InvalidOperation "...contentMD5..."."""
    code = error_code_of(exc)
    if code == "Md5Mismatch":
        return True
    return code == "InvalidOperation" and "md5" in str(exc.message or "").lower()


def translate(exc: AzureError, action: str, target: Target) -> CloudputError:
    """Turn an SDK failure into a cloudput error naming the action and target.

    Service messages are left out: an AuthenticationFailed detail can quote the
    request's signature.
    """
    where = f"{action} {target.uri}"
    if isinstance(exc, (ServiceRequestError, ServiceResponseError)):
        return TransientError(f"{where}: connection failed ({type(exc).__name__})")
    if not isinstance(exc, HttpResponseError):
        return TransientError(f"{where}: {type(exc).__name__}")
    status = exc.status_code or 0
    code = error_code_of(exc)
    shown = f"{where}: {code or 'error'} (HTTP {status})"
    if is_md5_mismatch(exc):
        return BadDigestError(f"{where}: the service computed another MD5 ({code})")
    if status in THROTTLE_STATUSES:
        return ThrottledError(shown, hint="the engine backs off and retries")
    if status >= 500:
        return TransientError(shown)
    if code == "ContainerNotFound":
        return BucketNotFoundError(
            f"container {target.bucket!r} not found",
            hint="create it first (az storage container create) or check the target",
        )
    if status in (401, 403):
        return _auth_error(exc, shown)
    return CloudputError(shown, code=f"azure_{code or status}")


def _auth_error(exc: HttpResponseError, shown: str) -> CloudputError:
    if "expire" in str(exc.message or "").lower():
        return CredentialsError(
            shown, hint="the SAS token or key has expired: renew it"
        )
    return CredentialsError(
        shown,
        hint="check the account key, SAS permissions or RBAC role (Storage Blob Data "
        "Contributor)",
    )


def _raise(exc: AzureError, action: str, target: Target) -> NoReturn:
    raise translate(exc, action, target) from exc


def _foreign_blocks_error(target: Target) -> NotSupportedError:
    return NotSupportedError(
        f"{target.uri} has uncommitted blocks staged by another tool with block ids of "
        "another length; Azure refuses every new block until they are gone",
        hint="finish or delete that other upload (deleting or overwriting the blob "
        "drops its uncommitted blocks), or wait "
        f"{UNCOMMITTED_BLOCK_LIFETIME_DAYS} days for Azure to discard them, then "
        "upload again",
        code="foreign_blocks",
    )


def _b64(raw: bytes | bytearray | None) -> str | None:
    return base64.b64encode(bytes(raw)).decode("ascii") if raw else None


def _md5_of(digests: Sequence[Digest]) -> str | None:
    return next((d.value_b64 for d in digests if d.algorithm == "md5"), None)


def remote_of(props: BlobProperties) -> RemoteObject:
    """What ``get_blob_properties`` says, as a ``RemoteObject``."""
    md5 = _b64(props.content_settings.content_md5)
    return RemoteObject(
        size_bytes=int(props.size),
        etag=props.etag,
        checksums={"md5": md5} if md5 else {},
        metadata=dict(props.metadata or {}),
        generation=props.version_id,
        content_type=props.content_settings.content_type,
    )


def blob_tier(storage_class: str | None) -> StandardBlobTier | None:
    """The access tier for ``--storage-class``: Hot, Cool, Cold or Archive."""
    if not storage_class:
        return None
    for tier in (
        StandardBlobTier.HOT,
        StandardBlobTier.COOL,
        StandardBlobTier.COLD,
        StandardBlobTier.ARCHIVE,
    ):
        if tier.value.lower() == storage_class.lower():
            return tier
    raise UsageError(
        f"--storage-class {storage_class!r} is not an Azure access tier",
        hint="use Hot, Cool, Cold or Archive",
    )


def blob_name(target: Target) -> str:
    """The blob name, refused when the service would store another (the object would
    not be at the key reported, and could overwrite another file's), so such a file is
    not sent (exit 10). Azure turns every '\\' of a blob name into '/' and drops the
    dots that end a path segment (its naming rules: no segment should end with '.')."""
    stored = target.key.replace("\\", "/")
    if stored != target.key:
        raise NotSupportedError(
            f"blob name {target.key!r}: Azure stores each '\\' of a blob name as "
            f"'/' (the blob would be {stored!r})",
            hint="rename the file, or upload it to a key without '\\'",
        )
    if any(segment.endswith(".") for segment in target.key.split("/")):
        stored = "/".join(segment.rstrip(".") for segment in target.key.split("/"))
        raise NotSupportedError(
            f"blob name {target.key!r}: Azure drops the dots that end a name or a "
            f"path segment (the blob could be stored as {stored!r})",
            hint="rename the file, or upload it to a key whose segments do not end "
            "with '.'",
        )
    return target.key


def _scope_of(spec: ObjectSpec) -> str | None:
    """x-ms-encryption-scope for every block and the commit (the same scope on all)."""
    return spec.encryption_key_id if spec.encryption == "scope" else None


class AzureProvider:
    """Block blobs: Put Block per part, Put Block List to complete, Put Blob for small.

    The session is the block-id prefix (``cloudput-<upload id>``); Azure keeps no
    upload object, so ``start`` only checks the blob's staged blocks.
    """

    limits = AZURE_LIMITS

    def __init__(
        self, settings: ProviderSettings, env: Mapping[str, str] | None = None
    ):
        self.settings = settings
        self._env = dict(os.environ if env is None else env)
        self._lock = threading.Lock()
        self._access: AzureAccess | None = None
        self._client: BlobServiceClient | None = None
        self._delegation: tuple[Any, float] | None = None

    # -- clients -------------------------------------------------------------------

    def _service(self, target: Target) -> BlobServiceClient:
        """The one client of this provider, made on first use (the target may name the
        account)."""
        with self._lock:
            if self._client is None:
                self._access = resolve_access(self.settings, self._env, target.account)
                self._client = self._make_client(self._access)
            elif target.account:
                assert self._access is not None
                _agree_on_account(self._access.account, target.account)
            return self._client

    def _make_client(self, access: AzureAccess) -> BlobServiceClient:
        session = requests.Session()
        pool = max(1, self.settings.concurrency)
        adapter = HTTPAdapter(
            pool_connections=pool,
            pool_maxsize=pool,
            max_retries=Retry(total=False, redirect=False, raise_on_status=False),
        )
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        transport = RequestsTransport(
            session=session,
            session_owner=True,
            connection_timeout=self.settings.timeout_s,
            read_timeout=self.settings.timeout_s,
            connection_verify=self.settings.verify_ssl,
        )
        return BlobServiceClient(
            account_url=access.endpoint,
            credential=access.credential,
            transport=transport,
            retry_total=0,  # the engine owns retries
            max_single_put_size=MAX_PUT_BLOB_SIZE_BYTES,
            max_block_size=MAX_BLOCK_SIZE_BYTES,
        )

    def _blob(self, target: Target) -> BlobClient:
        return self._service(target).get_blob_client(target.bucket, target.key)

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
                self._client = None

    def endpoint(self) -> str:
        """The blob service URL requests go to (for ``doctor``)."""
        return str(self._service(Target("azure", "", "")).url).split("?")[0]

    # -- checks and reads -----------------------------------------------------------

    def check_bucket(self, target: Target) -> None:
        if not target.is_prefix:
            blob_name(target)  # a named blob: refused before any request
        container = self._service(target).get_container_client(target.bucket)
        try:
            container.get_container_properties()
        except ResourceNotFoundError as exc:
            raise BucketNotFoundError(
                f"container {target.bucket!r} not found",
                hint="create it (az storage container create) or check the target",
            ) from exc
        except AzureError as exc:
            _raise(exc, "checking container of", target)

    def head(self, target: Target) -> RemoteObject | None:
        blob_name(target)
        try:
            props = self._blob(target).get_blob_properties()
        except ResourceNotFoundError as exc:
            if error_code_of(exc) == "ContainerNotFound":
                _raise(exc, "reading", target)
            return None
        except AzureError as exc:
            _raise(exc, "reading", target)
        return remote_of(props)

    def storage_url(self, target: Target) -> str:
        blob_name(target)  # asked before an upload is journaled: refused there
        return str(self._blob(target).url)

    def _block_lists(
        self, target: Target
    ) -> tuple[list[BlobBlock], list[BlobBlock]] | None:
        """(committed, uncommitted) blocks of the blob, or None when it has neither."""
        try:
            committed, uncommitted = self._blob(target).get_block_list("all")
        except ResourceNotFoundError as exc:
            if error_code_of(exc) == "ContainerNotFound":
                _raise(exc, "listing blocks of", target)
            return None
        except AzureError as exc:
            _raise(exc, "listing blocks of", target)
        return list(committed), list(uncommitted)

    # -- the block lifecycle --------------------------------------------------------

    def start(self, spec: ObjectSpec, part_size_bytes: int) -> str:
        """Return the block-id prefix; refuse before any byte moves if another tool's
        staged blocks (ids of another length) would make every Put Block fail."""
        blob_tier(spec.storage_class)
        blob_name(spec.target)
        prefix = block_prefix(spec.upload_id)
        lists = self._block_lists(spec.target)
        if lists is not None:
            self._check_foreign(spec.target, lists[1], prefix)
        log.debug("azure: blocks of %s use the prefix %s", spec.target.uri, prefix)
        return prefix

    def _check_foreign(
        self, target: Target, uncommitted: Sequence[BlobBlock], prefix: str
    ) -> None:
        ours = encoded_length(block_id(prefix, 1))
        if any(encoded_length(str(block.id)) != ours for block in uncommitted):
            raise _foreign_blocks_error(target)

    def held_parts(
        self, spec: ObjectSpec, session: str, parts: Sequence[PartSpec]
    ) -> dict[int, Receipt]:
        """Blocks of ours already staged with their planned size.

        A blob with no blocks is not "gone" (Azure keeps no session): nothing is held.
        When the blob's committed list is exactly our plan (a commit whose answer was
        lost), every part is held and ``complete`` confirms it.
        """
        lists = self._block_lists(spec.target)
        if lists is None:
            return {}
        committed, uncommitted = lists
        self._check_foreign(spec.target, uncommitted, session)
        wanted = {block_id(session, p.number): p for p in parts}
        if [str(b.id) for b in committed] == list(wanted):
            staged = committed
        else:
            staged = uncommitted
        held: dict[int, Receipt] = {}
        for block in staged:
            part = wanted.get(str(block.id))
            if part is not None and int(block.size) == part.size_bytes:
                held[part.number] = Receipt(part.number, str(block.id), part.size_bytes)
        return held

    def send_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        body: Body,
        digest: Digest | None,
    ) -> Receipt:
        """Put Block with the block's own Content-MD5 (mismatch: ``BadDigestError``).

        The block is streamed from ``body`` with its length given: with our own
        Content-MD5 and no ``validate_content`` the SDK does not read it ahead.
        """
        ident = block_id(session, part.number)
        md5 = (
            base64.b64decode(digest.value_b64)
            if digest and digest.algorithm == "md5"
            else None
        )
        try:
            with body.open() as stream:
                self._blob(spec.target).stage_block(
                    ident,
                    stream,
                    length=body.size_bytes,
                    transactional_content_md5=md5,
                    encryption_scope=_scope_of(spec),
                )
        except HttpResponseError as exc:
            if error_code_of(exc) in ("InvalidBlobOrBlock", "InvalidBlockId"):
                raise _foreign_blocks_error(spec.target) from exc
            _raise(exc, f"sending block {part.number} of", spec.target)
        except AzureError as exc:
            _raise(exc, f"sending block {part.number} of", spec.target)
        checksum = digest.value_b64 if digest else None
        return Receipt(part.number, ident, body.size_bytes, checksum)

    def complete(
        self,
        spec: ObjectSpec,
        session: str,
        receipts: Sequence[Receipt],
        expected: Expected,
    ) -> Verified:
        """Put Block List in file order, then confirm the blob's size."""
        ids = self._commit_ids(spec, session, receipts)
        blob = self._blob(spec.target)
        try:
            blob.commit_block_list(
                [BlobBlock(ident, BlockState.UNCOMMITTED) for ident in ids],
                content_settings=self._content_settings(spec, _md5_of(expected.whole)),
                metadata=dict(spec.metadata) or None,
                standard_blob_tier=blob_tier(spec.storage_class),
                tags=dict(spec.tags) or None,
                encryption_scope=_scope_of(spec),
            )
        except HttpResponseError as exc:
            if error_code_of(exc) != "InvalidBlockList":
                _raise(exc, "committing the block list of", spec.target)
            self._confirm_lost_commit(spec, ids, exc)
        except AzureError as exc:
            _raise(exc, "committing the block list of", spec.target)
        checked = "block-md5" if spec.checksum_algorithm == "md5" else "size"
        return self._verified(spec, expected, verified=checked)

    def _commit_ids(
        self, spec: ObjectSpec, session: str, receipts: Sequence[Receipt]
    ) -> list[str]:
        """Our block ids for parts 1..N; refuse a receipt that is not this upload's."""
        ordered = sorted(receipts, key=lambda r: r.number)
        ids = [block_id(session, n) for n in range(1, len(ordered) + 1)]
        for receipt, ident in zip(ordered, ids, strict=True):
            if receipt.etag and receipt.etag != ident:
                raise IntegrityError(
                    f"part {receipt.number} of {spec.target.uri} names block "
                    f"{receipt.etag!r}, not this upload's {ident!r}",
                    hint="cloudput only commits blocks this upload staged",
                )
        if [r.number for r in ordered] != list(range(1, len(ordered) + 1)):
            raise IntegrityError(
                f"the parts of {spec.target.uri} are not numbered 1..N"
            )
        return ids

    def _confirm_lost_commit(
        self, spec: ObjectSpec, ids: list[str], exc: HttpResponseError
    ) -> None:
        """Our blocks are not uncommitted any more: fine if they are now the blob."""
        lists = self._block_lists(spec.target)
        committed = [str(b.id) for b in lists[0]] if lists else []
        if committed == ids:
            log.info("azure: %s was already committed (a lost answer)", spec.target.uri)
            return
        raise UploadGoneError(
            f"the staged blocks of {spec.target.uri} are gone (committed or "
            "overwritten by someone else, or older than "
            f"{UNCOMMITTED_BLOCK_LIFETIME_DAYS} days)",
            hint="the upload starts over from its first block",
        ) from exc

    def _content_settings(
        self, spec: ObjectSpec, md5_b64: str | None
    ) -> ContentSettings:
        return ContentSettings(
            content_type=spec.content_type,
            cache_control=spec.cache_control,
            content_encoding=spec.content_encoding,
            content_disposition=spec.content_disposition,
            content_md5=bytearray(base64.b64decode(md5_b64)) if md5_b64 else None,
        )

    def _verified(
        self, spec: ObjectSpec, expected: Expected, verified: str
    ) -> Verified:
        remote = self.head(spec.target)
        if remote is None:
            raise IntegrityError(
                f"{spec.target.uri} is missing right after it was written"
            )
        if remote.size_bytes != expected.size_bytes:
            raise IntegrityError(
                f"{spec.target.uri} holds {remote.size_bytes:,} bytes, expected "
                f"{expected.size_bytes:,}"
            )
        value = remote.checksums.get("md5")
        local = _md5_of(expected.whole)
        if value and local and value != local:
            raise IntegrityError(
                f"{spec.target.uri}: Content-MD5 {value} differs from the "
                f"source's {local}"
            )
        return Verified(remote, "md5", value, verified)

    def abort(self, spec: ObjectSpec, session: str) -> None:
        """Leave no blob that was not there: delete a blob with no committed content.

        A blob with committed content keeps it (whoever wrote it); Azure has no call
        that drops staged blocks alone, so ours are discarded by Azure within a week.
        """
        lists = self._block_lists(spec.target)
        if lists is None:
            return
        committed, uncommitted = lists
        if committed or self.head(spec.target) is not None:
            if any(str(b.id).startswith(session + "-") for b in uncommitted):
                log.info(
                    "azure: %s keeps its content; our staged blocks expire in %d days",
                    spec.target.uri,
                    UNCOMMITTED_BLOCK_LIFETIME_DAYS,
                )
            return
        self._delete_uncommitted(spec.target)

    def _delete_uncommitted(self, target: Target) -> None:
        blob = self._blob(target)
        try:
            blob.delete_blob()
            return
        except ResourceNotFoundError:
            pass  # some services refuse to delete a blob with only staged blocks
        except AzureError as exc:
            _raise(exc, "deleting the staged blocks of", target)
        try:
            # Put Blob replaces the block list (dropping staged blocks); only when no
            # committed blob appeared meanwhile, then delete exactly that empty blob.
            written = blob.upload_blob(b"", overwrite=False)
            blob.delete_blob(
                etag=written["etag"], match_condition=MatchConditions.IfNotModified
            )
        except ResourceNotFoundError:
            return
        except HttpResponseError as exc:
            if exc.status_code in (409, 412):
                return  # someone committed content meanwhile: it stays
            _raise(exc, "deleting the staged blocks of", target)
        except AzureError as exc:
            _raise(exc, "deleting the staged blocks of", target)

    # -- one request ---------------------------------------------------------------

    def put_single(
        self, spec: ObjectSpec, body: Body, digest: Digest | None
    ) -> Verified:
        """One Put Blob carrying x-ms-blob-content-md5, which the service checks.

        Its answer carries the MD5 the service computed over the bytes it stored:
        equal to the file's, it is the proof and no Get Blob Properties is needed.
        """
        md5 = digest.value_b64 if digest and digest.algorithm == "md5" else None
        tier = blob_tier(spec.storage_class)
        blob_name(spec.target)
        try:
            with body.open() as reader:
                answer = self._blob(spec.target).upload_blob(
                    _BytesReads(reader),
                    length=body.size_bytes,
                    overwrite=True,
                    content_settings=self._content_settings(spec, md5),
                    metadata=dict(spec.metadata) or None,
                    standard_blob_tier=tier,
                    max_concurrency=1,
                    tags=dict(spec.tags) or None,
                    encryption_scope=_scope_of(spec),
                )
        except AzureError as exc:
            _raise(exc, "uploading", spec.target)
        stored_md5 = _b64(answer.get("content_md5"))
        if md5 and stored_md5 == md5:
            etag = answer.get("etag")
            remote = RemoteObject(
                size_bytes=body.size_bytes,
                etag=str(etag) if etag else None,
                checksums={"md5": md5},
                metadata=dict(spec.metadata),
                content_type=spec.content_type,
            )
            return Verified(remote, "md5", md5, "md5")
        whole = (Digest("md5", md5),) if md5 else ()
        expected = Expected(body.size_bytes, whole=whole)
        return self._verified(spec, expected, verified="md5" if md5 else "size")

    # -- presigned requests ----------------------------------------------------------

    def presign_part(
        self,
        spec: ObjectSpec,
        session: str,
        part: PartSpec,
        ttl_s: float,
        content_md5: str | None = None,
    ) -> PresignedRequest:
        """A Put Block URL with a blob-scoped write SAS."""
        blob_name(spec.target)
        ident = base64.b64encode(
            block_id(session, part.number).encode("utf-8")
        ).decode()
        sas, expires_at = self._sas(spec.target, ttl_s, BlobSasPermissions(write=True))
        query = f"comp=block&blockid={quote(ident, safe='')}&{sas}"
        url = f"{self.storage_url(spec.target)}?{query}"
        headers = {"Content-MD5": content_md5} if content_md5 else {}
        return PresignedRequest(url, "PUT", headers, expires_at)

    def presign_single(
        self, spec: ObjectSpec, ttl_s: float, content_md5: str | None = None
    ) -> PresignedRequest:
        """A Put Blob URL with a blob-scoped create+write SAS."""
        blob_name(spec.target)
        permission = BlobSasPermissions(create=True, write=True)
        sas, expires_at = self._sas(spec.target, ttl_s, permission)
        headers = {
            "x-ms-blob-type": "BlockBlob",
            "x-ms-blob-content-type": spec.content_type,
        }
        if content_md5:
            headers["Content-MD5"] = content_md5
        return PresignedRequest(
            f"{self.storage_url(spec.target)}?{sas}", "PUT", headers, expires_at
        )

    def _sas(
        self, target: Target, ttl_s: float, permission: BlobSasPermissions
    ) -> tuple[str, float]:
        service = self._service(target)
        assert self._access is not None
        expires_at = time.time() + ttl_s
        expiry = datetime.fromtimestamp(expires_at, timezone.utc)
        account = self._access.account or str(service.account_name)
        signing: dict[str, Any] = {}
        if self._access.account_key:
            signing["account_key"] = self._access.account_key
        elif self._access.kind == "default":
            signing["user_delegation_key"] = self._delegation_key(
                service, target, expiry
            )
        else:
            raise NotSupportedError(
                "presigned Azure URLs need an account key or DefaultAzureCredential "
                "(a user delegation key); a SAS token cannot sign new ones",
                hint="set AZURE_STORAGE_KEY, or unset the SAS token and `az login`",
            )
        sas = generate_blob_sas(
            account,
            target.bucket,
            target.key,
            permission=permission,
            expiry=expiry,
            **signing,
        )
        return sas, expires_at

    def _delegation_key(
        self, service: BlobServiceClient, target: Target, expiry: datetime
    ) -> Any:
        """A user delegation key valid at least until ``expiry`` (cached)."""
        with self._lock:
            cached = self._delegation
        if cached is not None and cached[1] >= expiry.timestamp():
            return cached[0]
        start = datetime.now(timezone.utc) - timedelta(minutes=5)
        try:
            key = service.get_user_delegation_key(start, expiry)
        except AzureError as exc:
            _raise(exc, "getting a user delegation key for", target)
        with self._lock:
            self._delegation = (key, expiry.timestamp())
        return key

    # -- cleanup ---------------------------------------------------------------------

    def list_incomplete(self, target: Target, older_than_s: float) -> list[Incomplete]:
        """Blobs under the prefix with staged blocks and no committed content."""
        container = self._service(target).get_container_client(target.bucket)
        cutoff = time.time() - older_than_s
        found: list[Incomplete] = []
        try:
            listed = list(
                container.list_blobs(
                    name_starts_with=target.key or None, include=["uncommittedblobs"]
                )
            )
        except AzureError as exc:
            _raise(exc, "listing", target)
        for props in listed:
            changed = props.last_modified.timestamp() if props.last_modified else None
            if props.size or (changed is not None and changed > cutoff):
                continue
            item = self._incomplete(
                target.child(props.name[len(target.key) :]), changed
            )
            if item is not None:
                found.append(item)
        return found

    def _incomplete(self, target: Target, changed: float | None) -> Incomplete | None:
        lists = self._block_lists(target)
        if lists is None or lists[0] or not lists[1]:
            return None
        match = _OUR_BLOCK_ID.match(str(lists[1][0].id))
        return Incomplete(target, match.group(1) if match else "", changed)


class _BytesReads:
    """A reader whose reads are ``bytes``: the SDK's single Put Blob reads the body
    whole and refuses any other bytes-like object (a memoryview of a part buffer)."""

    def __init__(self, reader: BinaryIO):
        self._reader = reader

    def read(self, size: int = -1) -> bytes:
        data = self._reader.read(size)
        return data if isinstance(data, bytes) else bytes(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reader, name)
