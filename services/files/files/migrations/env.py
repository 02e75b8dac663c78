from files.models import Base
from files.settings import FilesSettings
from taskhub_common.migrations import run_migrations

run_migrations(Base.metadata, FilesSettings(), user_directory=True, deleted_tasks=True)
