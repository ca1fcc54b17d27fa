"""The template's own resources, created in a moto server: SQS queues (with their DLQ redrive policies) and
DynamoDB tables (keys, indexes, TTL; in dynalite instead when ``dynamodb_url`` names it, see
localrun/dynamo_local.py). Also resolves each function's environment exactly as CloudFormation
would (Globals + function, !Ref/!GetAtt to the local resources, parameters with their defaults).

Lambda functions and event source mappings are not created in moto (moto would try to run them in Docker);
``localrun.lambdas`` and ``localrun.poller`` play that part."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from localrun.cfn_yaml import load_template

ACCOUNT = "123456789012"


@dataclass
class FunctionSpec:
    logical_id: str
    code_uri: Path
    handler: str
    timeout: int
    memory_mb: int
    reserved_concurrency: int | None
    environment: dict[str, str]
    routes: list[tuple[str, str]] = field(default_factory=list)  # (METHOD, /path/{param})
    sqs_sources: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Queue:
    logical_id: str
    name: str
    url: str
    arn: str
    visibility_timeout: int


class LocalStack:
    def __init__(
        self,
        template_path: Path,
        endpoint_url: str,
        region: str,
        parameters: dict[str, str] | None = None,
        visibility_timeout: int | None = None,
        dynamodb_url: str | None = None,  # where the tables live, if not at endpoint_url (dynalite)
    ) -> None:
        self.template_path = template_path
        self.root = template_path.parent
        self.template = load_template(str(template_path))
        self.endpoint_url = endpoint_url
        self.region = region
        self.parameters = self._parameters(parameters or {})
        self.visibility_override = visibility_timeout
        self.resources = self.template["Resources"]
        self.queues: dict[str, Queue] = {}
        self.tables: dict[str, str] = {}
        self._sqs = boto3.client("sqs", endpoint_url=endpoint_url, region_name=region)
        self.dynamodb_url = dynamodb_url or endpoint_url
        self._ddb = boto3.client("dynamodb", endpoint_url=self.dynamodb_url, region_name=region)

    def _parameters(self, overrides: dict[str, str]) -> dict[str, str]:
        values = {
            name: str(spec.get("Default", "")) for name, spec in self.template.get("Parameters", {}).items()
        }
        unknown = set(overrides) - set(values)
        if unknown:
            raise ValueError(f"unknown template parameter(s): {', '.join(sorted(unknown))}")
        values.update(overrides)
        return values

    # -- resources ---------------------------------------------------------------------------------------
    def create(self) -> LocalStack:
        by_type: dict[str, list[str]] = {}
        for logical_id, resource in self.resources.items():
            by_type.setdefault(resource["Type"], []).append(logical_id)
        queue_ids = by_type.get("AWS::SQS::Queue", [])
        # DLQs first: a main queue's redrive policy needs its DLQ's ARN.
        for logical_id in sorted(queue_ids, key=lambda q: "RedrivePolicy" in self._props(q)):
            self._create_queue(logical_id)
        return self.create_tables()

    def create_tables(self, only: set[str] | None = None) -> LocalStack:
        """Create the template's tables (or only those named, by logical id)."""
        for logical_id, resource in self.resources.items():
            if resource["Type"] == "AWS::DynamoDB::Table" and (only is None or logical_id in only):
                self._create_table(logical_id)
        return self

    def _props(self, logical_id: str) -> dict[str, Any]:
        return self.resources[logical_id].get("Properties", {}) or {}

    def _create_queue(self, logical_id: str) -> None:
        props = self._props(logical_id)
        fifo = bool(props.get("FifoQueue"))
        name = props.get("QueueName") or (f"{logical_id}.fifo" if fifo else logical_id)
        visibility = int(props.get("VisibilityTimeout", 30))
        if self.visibility_override is not None and "RedrivePolicy" in props:
            visibility = self.visibility_override
        attributes: dict[str, str] = {"VisibilityTimeout": str(visibility)}
        for key in (
            "MessageRetentionPeriod",
            "DelaySeconds",
            "ReceiveMessageWaitTimeSeconds",
            "ContentBasedDeduplication",
            "DeduplicationScope",
            "FifoThroughputLimit",
        ):
            if key in props:
                value = props[key]
                attributes[key] = str(value).lower() if isinstance(value, bool) else str(value)
        if fifo:
            attributes["FifoQueue"] = "true"
        if "RedrivePolicy" in props:
            policy = props["RedrivePolicy"]
            attributes["RedrivePolicy"] = json.dumps(
                {
                    "deadLetterTargetArn": self.resolve(policy["deadLetterTargetArn"]),
                    "maxReceiveCount": int(policy["maxReceiveCount"]),
                }
            )
        url = self._sqs.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
        arn = f"arn:aws:sqs:{self.region}:{ACCOUNT}:{name}"
        self.queues[logical_id] = Queue(logical_id, name, url, arn, visibility)

    def _create_table(self, logical_id: str) -> None:
        props = self._props(logical_id)
        name = props.get("TableName") or logical_id
        request: dict[str, Any] = {
            "TableName": name,
            "KeySchema": props["KeySchema"],
            "AttributeDefinitions": props["AttributeDefinitions"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if props.get("GlobalSecondaryIndexes"):
            request["GlobalSecondaryIndexes"] = [
                {"IndexName": g["IndexName"], "KeySchema": g["KeySchema"], "Projection": g["Projection"]}
                for g in props["GlobalSecondaryIndexes"]
            ]
        self._ddb.create_table(**request)
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            try:
                self._ddb.update_time_to_live(
                    TableName=name,
                    TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
                )
            except ClientError as exc:
                # dynalite has no UpdateTimeToLive: the table goes without TTL locally. Nothing is lost: moto
                # records the setting but never expires an item either, and no function reads it back.
                if exc.response["Error"]["Code"] != "UnknownOperationException":
                    raise
        self.tables[logical_id] = name

    # -- intrinsic functions -----------------------------------------------------------------------------
    def resolve(self, value: Any) -> Any:
        if isinstance(value, dict) and len(value) == 1:
            ((key, arg),) = value.items()
            if key == "Ref":
                return self._ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = arg if isinstance(arg, list) else arg.split(".", 1)
                return self._get_att(logical_id, attribute)
        if isinstance(value, (str, int, float, bool)):
            return str(value).lower() if isinstance(value, bool) else str(value)
        raise ValueError(f"the local runtime cannot resolve {value!r} (use !Ref or !GetAtt in env vars)")

    def _ref(self, name: str) -> str:
        if name in self.parameters:
            return self.parameters[name]
        if name in self.queues:
            return self.queues[name].url
        if name in self.tables:
            return self.tables[name]
        if name == "AWS::Region":
            return self.region
        if name == "AWS::AccountId":
            return ACCOUNT
        raise ValueError(f"!Ref {name}: not a parameter, queue or table of the template")

    def _get_att(self, logical_id: str, attribute: str) -> str:
        if logical_id in self.queues:
            queue = self.queues[logical_id]
            return {"Arn": queue.arn, "QueueName": queue.name, "QueueUrl": queue.url}[attribute]
        if logical_id in self.tables and attribute == "Arn":
            return f"arn:aws:dynamodb:{self.region}:{ACCOUNT}:table/{self.tables[logical_id]}"
        raise ValueError(f"!GetAtt {logical_id}.{attribute} is not supported locally")

    # -- functions ---------------------------------------------------------------------------------------
    def functions(self) -> dict[str, FunctionSpec]:
        globals_ = (self.template.get("Globals") or {}).get("Function", {}) or {}
        specs: dict[str, FunctionSpec] = {}
        for logical_id, resource in self.resources.items():
            if resource["Type"] != "AWS::Serverless::Function":
                continue
            props = {**globals_, **(resource.get("Properties") or {})}
            variables = {
                **((globals_.get("Environment") or {}).get("Variables") or {}),
                **(((resource.get("Properties") or {}).get("Environment") or {}).get("Variables") or {}),
            }
            spec = FunctionSpec(
                logical_id=logical_id,
                code_uri=(self.root / props["CodeUri"]).resolve(),
                handler=props["Handler"],
                timeout=int(props.get("Timeout", 3)),
                memory_mb=int(props.get("MemorySize", 128)),
                reserved_concurrency=props.get("ReservedConcurrentExecutions"),
                environment={name: self.resolve(value) for name, value in variables.items()},
            )
            for event in (props.get("Events") or {}).values():
                event_props = event.get("Properties") or {}
                if event["Type"] == "HttpApi":
                    spec.routes.append((event_props["Method"].upper(), event_props["Path"]))
                elif event["Type"] == "SQS":
                    queue_id = event_props["Queue"]["Fn::GetAtt"][0]
                    spec.sqs_sources.append(
                        {
                            "queue": self.queues[queue_id],
                            "batch_size": int(event_props.get("BatchSize", 10)),
                            "batching_window": float(event_props.get("MaximumBatchingWindowInSeconds", 0)),
                            "max_concurrency": int(
                                (event_props.get("ScalingConfig") or {}).get("MaximumConcurrency", 2)
                            ),
                            "report_failures": "ReportBatchItemFailures"
                            in (event_props.get("FunctionResponseTypes") or []),
                        }
                    )
            specs[logical_id] = spec
        return specs

    def layer_paths(self) -> list[Path]:
        return [
            (self.root / r["Properties"]["ContentUri"]).resolve()
            for r in self.resources.values()
            if r["Type"] == "AWS::Serverless::LayerVersion"
        ]
