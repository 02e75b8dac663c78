"""Where the bytes of attachments live: S3 (or any S3 API) when AWS_BUCKET is set, otherwise a
local folder under DATA_DIR/files (the embedded mode). One interface: put, open, delete.

boto3 and the file system block, so every call runs in a worker thread; a download is read in
chunks, each in a thread, and never held whole in memory.
"""

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Protocol

import boto3
from anyio import to_thread
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from files.settings import FilesSettings
from taskhub_common.errors import ServiceUnavailable

logger = logging.getLogger(__name__)

CHUNK_SIZE = 256 * 1024
STORAGE_UNAVAILABLE = "The file storage is unavailable"


class ObjectMissing(Exception):
    """The storage has no object under the key."""


class ByteStream:
    """An opened stored object, read chunk by chunk. Close it when done, also when it was never
    read (the response may fail before streaming starts)."""

    def __init__(self, read: Callable[[int], bytes], close: Callable[[], None]) -> None:
        self._read = read
        self._close = close
        self._closed = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        try:
            while chunk := await to_thread.run_sync(self._read, CHUNK_SIZE):
                yield chunk
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await to_thread.run_sync(self._close)


class Storage(Protocol):
    async def start(self) -> None:
        """Make the storage ready (create the bucket or folder if missing)."""

    async def put(self, key: str, source: Path, content_type: str) -> None:
        """Store the file at `source` under `key` (replacing nothing: keys are generated)."""

    async def open(self, key: str) -> ByteStream:
        """The object's bytes as a stream; ObjectMissing when there is none."""

    async def delete(self, key: str) -> None:
        """Remove the object; a missing one is not an error."""

    async def exists(self, key: str) -> bool: ...

    async def close(self) -> None: ...


class LocalStorage:
    """A folder; each object a file. Written under a temporary name and renamed, so a reader
    never sees half a file."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()

    def _path(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if path == self.root or not path.is_relative_to(self.root):
            raise ValueError(f"storage key {key!r} leaves the storage folder")
        return path

    async def start(self) -> None:
        await to_thread.run_sync(lambda: self.root.mkdir(parents=True, exist_ok=True))

    async def put(self, key: str, source: Path, content_type: str) -> None:
        target = self._path(key)

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.part")
            try:
                shutil.copyfile(source, partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)

        try:
            await to_thread.run_sync(copy)
        except OSError as exc:
            logger.exception("storing %s failed", key)
            raise ServiceUnavailable(STORAGE_UNAVAILABLE) from exc

    async def open(self, key: str) -> ByteStream:
        path = self._path(key)
        try:
            handle = await to_thread.run_sync(path.open, "rb")
        except FileNotFoundError:
            raise ObjectMissing(key) from None
        except OSError as exc:
            raise ServiceUnavailable(STORAGE_UNAVAILABLE) from exc
        return ByteStream(handle.read, handle.close)

    async def delete(self, key: str) -> None:
        try:
            await to_thread.run_sync(lambda: self._path(key).unlink(missing_ok=True))
        except OSError as exc:
            raise ServiceUnavailable(STORAGE_UNAVAILABLE) from exc

    async def exists(self, key: str) -> bool:
        return await to_thread.run_sync(self._path(key).is_file)

    async def close(self) -> None:
        pass


class S3Storage:
    """One bucket of an S3 API. One boto3 client (thread-safe), its calls in worker threads."""

    def __init__(self, settings: FilesSettings, max_connections: int = 50) -> None:
        self.bucket = settings.AWS_BUCKET
        self.region = settings.AWS_REGION or None
        endpoint = settings.CUSTOM_S3_ENDPOINT_URL or None
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint,
            region_name=self.region,
            aws_access_key_id=settings.AWS_ACCESS_KEY_ID or None,
            aws_secret_access_key=settings.AWS_SECRET_ACCESS_KEY or None,
            config=Config(
                # MinIO and most other S3 APIs want bucket names in the path, not the host.
                s3={"addressing_style": "path"} if endpoint else {},
                retries={"max_attempts": 3, "mode": "standard"},
                connect_timeout=5,
                read_timeout=60,
                max_pool_connections=max_connections,
                # The checksums botocore adds by default since 1.36 are refused by some S3 APIs
                # (GCS, older MinIO); send them only where an operation requires them.
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
            ),
        )

    async def start(self) -> None:
        try:
            await to_thread.run_sync(self._ensure_bucket)
        except (BotoCoreError, ClientError) as exc:
            raise RuntimeError(f"the S3 bucket {self.bucket!r} is not usable: {exc}") from exc

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 403:
                # Credentials for objects only may not see the bucket itself: carry on.
                logger.warning("no permission to check bucket %s; assuming it exists", self.bucket)
                return
            if status != 404:
                raise
        options = {}
        if self.region and self.region != "us-east-1":
            options["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self.client.create_bucket(Bucket=self.bucket, **options)
            logger.info("created bucket %s", self.bucket)
        except ClientError as exc:
            # Another replica created it meanwhile.
            if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                raise

    async def put(self, key: str, source: Path, content_type: str) -> None:
        def upload() -> None:
            with source.open("rb") as body:
                self.client.put_object(
                    Bucket=self.bucket, Key=key, Body=body, ContentType=content_type
                )

        try:
            await to_thread.run_sync(upload)
        except (BotoCoreError, ClientError, OSError) as exc:
            logger.exception("storing %s failed", key)
            raise ServiceUnavailable(STORAGE_UNAVAILABLE) from exc

    async def open(self, key: str) -> ByteStream:
        try:
            response = await to_thread.run_sync(
                lambda: self.client.get_object(Bucket=self.bucket, Key=key)
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                raise ObjectMissing(key) from None
            raise ServiceUnavailable(STORAGE_UNAVAILABLE) from exc
        except BotoCoreError as exc:
            raise ServiceUnavailable(STORAGE_UNAVAILABLE) from exc
        body = response["Body"]
        return ByteStream(body.read, body.close)

    async def delete(self, key: str) -> None:
        try:
            await to_thread.run_sync(lambda: self.client.delete_object(Bucket=self.bucket, Key=key))
        except (BotoCoreError, ClientError) as exc:
            raise ServiceUnavailable(STORAGE_UNAVAILABLE) from exc

    async def exists(self, key: str) -> bool:
        try:
            await to_thread.run_sync(lambda: self.client.head_object(Bucket=self.bucket, Key=key))
        except ClientError as exc:
            if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise
        return True

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()


def make_storage(settings: FilesSettings) -> Storage:
    if settings.AWS_BUCKET:
        return S3Storage(settings)
    return LocalStorage(settings.files_dir)
