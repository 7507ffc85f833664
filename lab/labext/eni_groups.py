"""eni_groups: an ENI's security groups are its own, as in AWS.

Stock moto 5.2.5 (moto/ec2/models/elastic_network_interfaces.py, NetworkInterface.group_set)
reports, for every ENI attached to an instance, the union of the ENI's own groups and the
groups the instance was launched with; ModifyNetworkInterfaceAttribute(Groups) replaces only
the ENI's own set. So after an isolation swap DescribeInstances and
DescribeNetworkInterfaces still list the launch groups on every ENI (the primary and any
secondary), and the instance's SecurityGroups never change. In AWS an ENI carries exactly
the groups last set on it, and the instance's SecurityGroups are its primary ENI's.

This extension makes group_set the ENI's own set, and keeps the instance's security_groups
equal to its primary (device index 0) ENI's groups after ModifyNetworkInterfaceAttribute.
"""

from __future__ import annotations

from moto.ec2.models.elastic_network_interfaces import NetworkInterface, NetworkInterfaceBackend

_stock_modify = NetworkInterfaceBackend.modify_network_interface_attribute


def _group_set(self):
    return self._group_set


def _modify(self, eni_id, group_ids, source_dest_check=None, description=None):
    _stock_modify(self, eni_id, group_ids, source_dest_check, description)
    eni = self.get_network_interface(eni_id)
    instance = getattr(eni, "instance", None)
    if group_ids and instance is not None and getattr(eni, "device_index", None) in (0, "0"):
        instance.security_groups = list(eni._group_set)


def install(ctx) -> None:
    NetworkInterface.group_set = property(_group_set)
    NetworkInterfaceBackend.modify_network_interface_attribute = _modify
