#!/bin/sh
# The official image's environment variables, written as RabbitMQ's configuration.
set -eu
config=/tmp/rabbitmq.conf
cat >"$config" <<CONF
default_user = ${RABBITMQ_DEFAULT_USER:-guest}
default_pass = ${RABBITMQ_DEFAULT_PASS:-guest}
loopback_users = none
listeners.tcp.default = 5672
management.tcp.port = 15672
CONF
export RABBITMQ_CONFIG_FILE=$config
exec rabbitmq-server
