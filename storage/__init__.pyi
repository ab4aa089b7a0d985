# The public face's names, for editors and type checkers; __init__.py loads each on first use.

from ._artifacts import (
    artifact_dir as artifact_dir,
    open_artifact_store as open_artifact_store,
)
from ._errors import (
    StorageError as StorageError,
)
from ._lock import (
    storage_lock as storage_lock,
)
from ._open import (
    open_storage as open_storage,
    serve_proxy as serve_proxy,
    upgrade_schema as upgrade_schema,
)
from ._redact import (
    redact as redact,
)
from ._urls import (
    SUPPORTED_FORMS as SUPPORTED_FORMS,
    file_path as file_path,
    normalize_url as normalize_url,
)
