from notifier.models import Base
from notifier.settings import NotifierSettings
from taskhub_common.migrations import run_migrations

run_migrations(Base.metadata, NotifierSettings(), user_directory=True, deleted_tasks=True)
