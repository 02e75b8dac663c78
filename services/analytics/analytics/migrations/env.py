from analytics.models import Base
from analytics.settings import AnalyticsSettings
from taskhub_common.migrations import run_migrations

run_migrations(Base.metadata, AnalyticsSettings(), user_directory=True)
