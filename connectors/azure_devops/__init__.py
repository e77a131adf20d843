"""Azure DevOps Boards connector: WIQL polling, work item batches, service hooks.

Plain async httpx against the REST API, api-version 7.1 (the ``azure-devops``
Python package is an unmaintained, synchronous beta and is not used).
"""

from connectors.azure_devops.client import API_VERSION, BATCH_LIMIT, AzureDevOpsClient
from connectors.azure_devops.config import DEFAULT_HOURS_FIELD, AzureBoardConfig
from connectors.azure_devops.connector import (
    AzureDevOpsConnector,
    format_cursor,
    parse_azure_datetime,
)
from connectors.azure_devops.service_hook import WORK_ITEM_EVENTS, parse_azure_service_hook

__all__ = [
    "API_VERSION",
    "BATCH_LIMIT",
    "DEFAULT_HOURS_FIELD",
    "WORK_ITEM_EVENTS",
    "AzureBoardConfig",
    "AzureDevOpsClient",
    "AzureDevOpsConnector",
    "format_cursor",
    "parse_azure_datetime",
    "parse_azure_service_hook",
]
