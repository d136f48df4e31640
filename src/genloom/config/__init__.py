"""One typed settings tree, read from genloom.yaml and GENLOOM_* environment variables.

Nothing else in Genloom reads the environment: components receive their section of
`Settings` explicitly.
"""

from genloom.config.settings import (
    ApiSettings,
    AuthMode,
    ClassificationSettings,
    ConfigError,
    GuardMode,
    FeedbackSettings,
    FineTuningSettings,
    GuardrailSettings,
    ImageSettings,
    JobsSettings,
    ModelKind,
    ModelSettings,
    QueueSettings,
    Role,
    RoutingSettings,
    RuntimeSettings,
    ScannerPolicy,
    ServerSettings,
    Settings,
    StoreSettings,
    TieredRoute,
    load_settings,
)

__all__ = [
    "ApiSettings",
    "AuthMode",
    "ClassificationSettings",
    "ConfigError",
    "GuardMode",
    "FeedbackSettings",
    "FineTuningSettings",
    "GuardrailSettings",
    "ImageSettings",
    "JobsSettings",
    "ModelKind",
    "ModelSettings",
    "QueueSettings",
    "Role",
    "RoutingSettings",
    "RuntimeSettings",
    "ScannerPolicy",
    "ServerSettings",
    "Settings",
    "StoreSettings",
    "TieredRoute",
    "load_settings",
]
