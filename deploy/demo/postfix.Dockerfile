# The demo's Postfix, with main.cf mounted by docker-compose.yml. Mail for
# demo@mx.demo.example lands in /var/mail/demo.
FROM debian:bookworm-slim
RUN echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections \
    && apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --shell /usr/sbin/nologin demo \
    && { test -f /etc/postfix/master.cf || cp /usr/share/postfix/master.cf.dist /etc/postfix/master.cf; } \
    && postconf -F '*/*/chroot = n'
# Chroot off (above): a chrooted smtpd would need a copy of /etc/resolv.conf
# and /etc/hosts in /var/spool/postfix to find the "spf-milter" service.
EXPOSE 25
# start-fg: the master process in the foreground, logging to stdout
# (maillog_file in main.cf).
CMD ["postfix", "start-fg"]
