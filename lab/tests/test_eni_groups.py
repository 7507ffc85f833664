"""eni_groups: an ENI carries exactly the groups last set on it (stock moto reports the
union with the instance's launch groups)."""

from __future__ import annotations


def _groups(ec2, iid):
    inst = ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]
    by_index = sorted((n["Attachment"]["DeviceIndex"], sorted(g["GroupId"] for g in n["Groups"]))
                      for n in inst["NetworkInterfaces"])
    return [g for _, g in by_index], sorted(g["GroupId"] for g in inst["SecurityGroups"])


def test_swapped_groups_replace_the_launch_groups(lab, fresh_account):
    ec2 = lab.client("ec2", account=fresh_account, region="eu-west-1")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    a, b, c = (ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"] for n in "abc")
    iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=sub,
                            SecurityGroupIds=[a])["Instances"][0]["InstanceId"]
    eni1 = ec2.create_network_interface(SubnetId=sub, Groups=[a, b])["NetworkInterface"]["NetworkInterfaceId"]
    ec2.attach_network_interface(NetworkInterfaceId=eni1, InstanceId=iid, DeviceIndex=1)
    assert _groups(ec2, iid) == ([[a], sorted([a, b])], [a])
    enis = [n["NetworkInterfaceId"] for n in ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["NetworkInterfaces"]]
    for eni in enis:
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[c])
    assert _groups(ec2, iid) == ([[c], [c]], [c])
    for n in ec2.describe_network_interfaces(NetworkInterfaceIds=enis)["NetworkInterfaces"]:
        assert [g["GroupId"] for g in n["Groups"]] == [c]


def test_stock_enis_keep_the_launch_groups_after_a_swap(stock_lab, fresh_account):
    # Stock moto 5.2.5 reports each attached ENI's groups as the union of its own and the
    # instance's launch groups, and never changes the instance's SecurityGroups: after an
    # isolation swap the instance still looks open.
    ec2 = stock_lab.client("ec2", account=fresh_account, region="eu-west-1")
    vpc = ec2.create_vpc(CidrBlock="10.7.0.0/16")["Vpc"]["VpcId"]
    sub = ec2.create_subnet(VpcId=vpc, CidrBlock="10.7.1.0/24")["Subnet"]["SubnetId"]
    a, c = (ec2.create_security_group(GroupName=n, Description=n, VpcId=vpc)["GroupId"] for n in "ac")
    iid = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, SubnetId=sub,
                            SecurityGroupIds=[a])["Instances"][0]["InstanceId"]
    enis = [n["NetworkInterfaceId"] for n in ec2.describe_network_interfaces(
        Filters=[{"Name": "attachment.instance-id", "Values": [iid]}])["NetworkInterfaces"]]
    for eni in enis:
        ec2.modify_network_interface_attribute(NetworkInterfaceId=eni, Groups=[c])
    eni_groups, instance_groups = _groups(ec2, iid)
    assert eni_groups == [sorted([a, c])]
    assert instance_groups == [a]
