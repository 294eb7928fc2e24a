"""The token table as template.yaml declares it, for the local stack.

The local stack creates its DynamoDB Local table from these definitions instead of repeating them, so
keys, the due index and the TTL attribute cannot drift from what is deployed.

    kwargs = table_definition_from_template()
    dynamodb.create_table(TableName="tokens", **kwargs)
    dynamodb.update_time_to_live(
        TableName="tokens",
        TimeToLiveSpecification={"AttributeName": ttl_attribute_from_template(), "Enabled": True},
    )
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
TABLE_RESOURCE = "TokenTable"

# The parts of a CloudFormation GlobalSecondaryIndex that CreateTable accepts for an on-demand table.
_INDEX_FIELDS = ("IndexName", "KeySchema", "Projection")


class CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that reads CloudFormation's short-form tags (``!Ref``, ``!Sub``, ``!GetAtt``,
    ``!If``...) as their long forms (``{"Ref": ...}``, ``{"Fn::Sub": ...}``), as CloudFormation does."""


def _intrinsic(loader: yaml.SafeLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    key = tag_suffix if tag_suffix in ("Ref", "Condition") else f"Fn::{tag_suffix}"
    value: Any
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
        if tag_suffix == "GetAtt":  # "Resource.Attribute" is the short form of [Resource, Attribute]
            value = str(value).split(".", 1)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)  # type: ignore[arg-type]
    return {key: value}


CloudFormationLoader.add_multi_constructor("!", _intrinsic)


def load_template(path: str | Path = TEMPLATE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        template = yaml.load(f, Loader=CloudFormationLoader)  # noqa: S506  # nosec B506  # a SafeLoader subclass
    if not isinstance(template, dict) or "Resources" not in template:
        raise ValueError(f"{path} is not a CloudFormation template (no Resources)")
    return template


def _table_properties(path: str | Path, resource: str) -> dict[str, Any]:
    table = load_template(path)["Resources"].get(resource)
    if not table or table.get("Type") != "AWS::DynamoDB::Table":
        raise ValueError(f"{path} has no AWS::DynamoDB::Table named {resource}")
    properties: dict[str, Any] = table["Properties"]
    return properties


def _literal(value: Any, where: str) -> Any:
    """The value itself, or an error if it is computed at deploy time (the local stack cannot resolve it)."""
    if isinstance(value, dict):
        if any(k == "Ref" or k.startswith("Fn::") for k in value):
            raise ValueError(f"{where} is computed by CloudFormation ({next(iter(value))}); keep it literal")
        return {k: _literal(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_literal(v, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def table_definition_from_template(
    path: str | Path = TEMPLATE, resource: str = TABLE_RESOURCE
) -> dict[str, Any]:
    """CreateTable keyword arguments (all but TableName) for the table ``resource`` of the template:
    AttributeDefinitions, KeySchema, GlobalSecondaryIndexes and BillingMode."""
    properties = _table_properties(path, resource)
    definition: dict[str, Any] = {
        "AttributeDefinitions": properties["AttributeDefinitions"],
        "KeySchema": properties["KeySchema"],
        "BillingMode": properties.get("BillingMode", "PROVISIONED"),
    }
    if properties.get("GlobalSecondaryIndexes"):
        definition["GlobalSecondaryIndexes"] = [
            {field: index[field] for field in _INDEX_FIELDS} for index in properties["GlobalSecondaryIndexes"]
        ]
    result: dict[str, Any] = _literal(definition, resource)
    return result


def ttl_attribute_from_template(path: str | Path = TEMPLATE, resource: str = TABLE_RESOURCE) -> str | None:
    """The TTL attribute of the table, or None when the template turns TTL off."""
    spec = _table_properties(path, resource).get("TimeToLiveSpecification") or {}
    if not _literal(spec.get("Enabled", False), f"{resource}.TimeToLiveSpecification.Enabled"):
        return None
    return str(_literal(spec["AttributeName"], f"{resource}.TimeToLiveSpecification.AttributeName"))
