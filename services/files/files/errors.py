"""The files service's own expected errors (the others come from taskhub_common.errors)."""

from taskhub_common.errors import AppError


class TooLarge(AppError):
    status_code = 413
    code = "too_large"


class UnsupportedMediaType(AppError):
    status_code = 415
    code = "unsupported_media_type"
