"""The process shell: the `modelyard` command and the supervisor that starts the control process and the workers."""
