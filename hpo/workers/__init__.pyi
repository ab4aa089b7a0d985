# The public face's names, for editors and type checkers; __init__.py loads each on first use.

from ._budget import (
    HEARTBEAT_SECONDS as HEARTBEAT_SECONDS,
    BudgetedStudy as BudgetedStudy,
    BudgetReached as BudgetReached,
)
from ._devices import (
    Slot as Slot,
    gpu_count as gpu_count,
    parse_devices as parse_devices,
)
from ._objective import (
    Objective as Objective,
    root_trial_number as root_trial_number,
)
from ._observers import (
    observers_for as observers_for,
)
from ._pool import (
    STOP_GRACE_SECONDS as STOP_GRACE_SECONDS,
    PoolResult as PoolResult,
    PullArgs as PullArgs,
    pull_trials as pull_trials,
    run_workers as run_workers,
)
