from taskhub_common.settings import ServiceSettings


class CommentsSettings(ServiceSettings):
    SERVICE_NAME: str = "comments"
