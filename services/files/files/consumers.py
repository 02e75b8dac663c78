"""Events the files service consumes: user.* for its uploader directory, task.deleted to stop
serving a deleted task's files."""

from taskhub_common.contracts import TASK_DELETED
from taskhub_common.deleted_tasks import on_task_deleted
from taskhub_common.users import USER_EVENT_HANDLERS

EVENT_HANDLERS = {**USER_EVENT_HANDLERS, TASK_DELETED: on_task_deleted}
