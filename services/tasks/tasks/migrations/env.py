from taskhub_common.migrations import run_migrations
from tasks.models import Base
from tasks.settings import TasksSettings

run_migrations(Base.metadata, TasksSettings(), user_directory=True)
