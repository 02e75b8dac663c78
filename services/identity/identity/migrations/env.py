from identity.models import Base
from identity.settings import IdentitySettings
from taskhub_common.migrations import run_migrations

run_migrations(Base.metadata, IdentitySettings())
