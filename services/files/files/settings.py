from pathlib import Path

from taskhub_common.settings import UploadSettings, split_csv

DEFAULT_ALLOWED_FILE_TYPES = ",".join(
    [
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "application/pdf",
        "text/plain",
        "text/csv",
        "application/zip",
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ]
)


class FilesSettings(UploadSettings):
    SERVICE_NAME: str = "files"

    # S3 (or any S3 API: MinIO, GCS). No AWS_BUCKET: the bytes go to DATA_DIR/files instead.
    AWS_ACCESS_KEY_ID: str = ""
    AWS_SECRET_ACCESS_KEY: str = ""
    AWS_BUCKET: str = ""
    AWS_REGION: str = ""
    CUSTOM_S3_ENDPOINT_URL: str = ""

    ALLOWED_FILE_TYPES: str = DEFAULT_ALLOWED_FILE_TYPES
    # Where uploads are spooled before they are stored; empty: the system's temporary folder.
    UPLOAD_SPOOL_DIR: str = ""

    @property
    def allowed_file_types(self) -> frozenset[str]:
        return frozenset(item.lower() for item in split_csv(self.ALLOWED_FILE_TYPES))

    @property
    def files_dir(self) -> Path:
        """The local folder of the embedded mode (no AWS_BUCKET)."""
        return self.DATA_DIR / "files"
