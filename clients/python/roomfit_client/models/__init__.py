"""Contains all the data models used in inputs/outputs"""

from .adapter_cache_out import AdapterCacheOut
from .adapter_out import AdapterOut
from .create_preview_body import CreatePreviewBody
from .create_preview_body_mode import CreatePreviewBodyMode
from .create_subject_body import CreateSubjectBody
from .error_info import ErrorInfo
from .field_error import FieldError
from .get_preview_result_format import GetPreviewResultFormat
from .gpu_out import GpuOut
from .health import Health
from .job_out import JobOut
from .job_out_kind import JobOutKind
from .job_out_status import JobOutStatus
from .job_out_timings import JobOutTimings
from .job_page import JobPage
from .list_jobs_status_type_0 import ListJobsStatusType0
from .list_subjects_status_type_0 import ListSubjectsStatusType0
from .ops_job_out import OpsJobOut
from .ops_job_out_kind import OpsJobOutKind
from .ops_job_out_status import OpsJobOutStatus
from .ops_job_out_timings import OpsJobOutTimings
from .photo_out import PhotoOut
from .photo_out_source_type_0 import PhotoOutSourceType0
from .preview_out import PreviewOut
from .preview_out_mode import PreviewOutMode
from .preview_out_status import PreviewOutStatus
from .preview_out_timings import PreviewOutTimings
from .problem import Problem
from .problem_code import ProblemCode
from .queue_out import QueueOut
from .queue_out_counts import QueueOutCounts
from .queues_out import QueuesOut
from .readiness import Readiness
from .readiness_checks import ReadinessChecks
from .readiness_status import ReadinessStatus
from .subject_out import SubjectOut
from .subject_out_status import SubjectOutStatus
from .subject_page import SubjectPage
from .subject_status_out import SubjectStatusOut
from .subject_status_out_status import SubjectStatusOutStatus
from .tenant_usage_out import TenantUsageOut
from .timeline_entry import TimelineEntry
from .timeline_entry_event import TimelineEntryEvent
from .usage_out import UsageOut
from .webhook_created import WebhookCreated
from .webhook_in import WebhookIn
from .webhook_out import WebhookOut
from .worker_out import WorkerOut
from .workers_out import WorkersOut

__all__ = (
    "AdapterCacheOut",
    "AdapterOut",
    "CreatePreviewBody",
    "CreatePreviewBodyMode",
    "CreateSubjectBody",
    "ErrorInfo",
    "FieldError",
    "GetPreviewResultFormat",
    "GpuOut",
    "Health",
    "JobOut",
    "JobOutKind",
    "JobOutStatus",
    "JobOutTimings",
    "JobPage",
    "ListJobsStatusType0",
    "ListSubjectsStatusType0",
    "OpsJobOut",
    "OpsJobOutKind",
    "OpsJobOutStatus",
    "OpsJobOutTimings",
    "PhotoOut",
    "PhotoOutSourceType0",
    "PreviewOut",
    "PreviewOutMode",
    "PreviewOutStatus",
    "PreviewOutTimings",
    "Problem",
    "ProblemCode",
    "QueueOut",
    "QueueOutCounts",
    "QueuesOut",
    "Readiness",
    "ReadinessChecks",
    "ReadinessStatus",
    "SubjectOut",
    "SubjectOutStatus",
    "SubjectPage",
    "SubjectStatusOut",
    "SubjectStatusOutStatus",
    "TenantUsageOut",
    "TimelineEntry",
    "TimelineEntryEvent",
    "UsageOut",
    "WebhookCreated",
    "WebhookIn",
    "WebhookOut",
    "WorkerOut",
    "WorkersOut",
)
