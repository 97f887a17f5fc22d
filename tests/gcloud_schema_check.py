"""Run by gcloud's own Python (tests/test_deploy.py): parse deploy configs into the API messages this
gcloud sends, strictly, so a misspelt field or enum in a metric, dashboard, alert policy, cleanup
policy or bucket lifecycle fails here instead of in Google Cloud.

stdin: JSON list of {"kind": ..., "name": ..., "data": ...}; stdout: JSON list of problems.
"""

import json
import sys


def main() -> None:
    sdk_lib = sys.argv[1]
    sys.path[:0] = [f"{sdk_lib}/third_party", sdk_lib]
    from googlecloudsdk.api_lib.util import apis
    from googlecloudsdk.api_lib.util import messages as messages_util
    from googlecloudsdk.command_lib.artifacts import cleanup_policy_util
    from googlecloudsdk.command_lib.util.apis import arg_utils

    kinds = {
        "LogMetric": apis.GetMessagesModule("logging", "v2").LogMetric,
        "Dashboard": apis.GetMessagesModule("monitoring", "v1").Dashboard,
        "AlertPolicy": apis.GetMessagesModule("monitoring", "v3").AlertPolicy,
        "Lifecycle": apis.GetMessagesModule("storage", "v1").Bucket.LifecycleValue,
    }
    problems = []
    for item in json.load(sys.stdin):
        try:
            if item["kind"] == "CleanupPolicy":  # as `artifacts repositories set-cleanup-policies --policy` reads it
                repository = apis.GetMessagesModule("artifactregistry", "v1").Repository()
                arg_utils.SetFieldInMessage(repository, "cleanupPolicies", cleanup_policy_util.ParseCleanupPolicy(item["path"]))
                for policy in repository.cleanupPolicies.additionalProperties:
                    condition = policy.value.condition
                    if policy.value.action is None or (condition is not None and condition.tagState is None):
                        problems.append(f"{item['name']}: {policy.key}: action or tagState not understood")
            else:
                messages_util.DictToMessageWithErrorCheck(item["data"], kinds[item["kind"]])
        except Exception as error:  # noqa: BLE001 - every problem is reported, not just the first
            problems.append(f"{item['name']}: {type(error).__name__}: {error}")
    json.dump(problems, sys.stdout)


if __name__ == "__main__":
    main()
