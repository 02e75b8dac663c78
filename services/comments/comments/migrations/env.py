from comments.models import Base
from comments.settings import CommentsSettings
from taskhub_common.migrations import run_migrations

run_migrations(Base.metadata, CommentsSettings(), user_directory=True, deleted_tasks=True)
