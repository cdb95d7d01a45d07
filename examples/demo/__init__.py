"""The embedded demo config served by ``twistd -n apigw`` (installed as ``twistgw.demo``)."""
