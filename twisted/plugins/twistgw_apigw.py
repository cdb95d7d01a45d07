"""twistd dropin for twistgw: ``twistd apigw``.

A lazy ServiceMaker: ``twistd --help`` lists ``apigw`` without importing the gateway.
"""

from twisted.application.service import ServiceMaker

TwistGW = ServiceMaker(
    "twistgw API gateway",
    "twistgw.tap",
    "Serve Amazon API Gateway definitions (OpenAPI + x-amazon-apigateway-*) on-prem",
    "apigw",
)
