# heaptrace agent image: the static binary and nothing else.
#
#   bash scripts/build-static.sh            # -> target/static/heaptrace
#   docker build -t heaptrace:dev .         # or: podman build
#
# The agent loads eBPF programs and attaches uprobes to other processes'
# binaries, so it runs as uid 0 with a handful of capabilities (BPF,
# PERFMON, SYS_ADMIN, SYS_PTRACE, SYS_RESOURCE) and every other one dropped; see
# deploy/kubernetes/heaptrace-agent.yaml.
FROM scratch
COPY target/static/heaptrace /heaptrace
EXPOSE 9464
# hadolint ignore=DL3002
USER 0:0
ENTRYPOINT ["/heaptrace", "agent"]
CMD ["--listen", "0.0.0.0:9464"]
