variable "region" {
  description = "AWS region of the bucket; put it near the databases and the worker."
  type        = string
}

variable "bucket_name" {
  description = "Globally unique bucket name; the pitrflow config names it as repository.url = \"s3://<bucket_name>/<prefix>\"."
  type        = string
}

variable "infrequent_access_after_days" {
  description = "Move objects to STANDARD_IA after this many days. Never Glacier: a restore must read its backup and WAL at once."
  type        = number
  default     = 30
  validation {
    condition     = var.infrequent_access_after_days >= 30
    error_message = "S3 does not move objects to STANDARD_IA before 30 days."
  }
}

variable "noncurrent_version_days" {
  description = "Keep overwritten or deleted versions this long: the window in which a deleted backup can still be recovered."
  type        = number
  default     = 30
}

variable "expire_after_days" {
  description = "Delete objects older than this (0 = never). It must exceed the recovery window you promise plus the interval between full backups, or the oldest targets become unrecoverable; pitrflow rejects a backup with a missing object rather than restoring from it."
  type        = number
  default     = 0
}

variable "object_lock_enabled" {
  description = "Create the bucket with S3 Object Lock, so no one (a compromised worker, ransomware with the worker's keys) can delete or overwrite a backup before its lock lapses. Only possible when the bucket is created. Set repository.object_lock = { mode = object_lock_mode, days = object_lock_days } in the pitrflow config."
  type        = bool
  default     = false
}

variable "object_lock_mode" {
  description = "GOVERNANCE: principals with s3:BypassGovernanceRetention can still shorten a lock (give it to nobody day to day). COMPLIANCE: nobody can, not even the account root, until the lock lapses."
  type        = string
  default     = "GOVERNANCE"
  validation {
    condition     = contains(["GOVERNANCE", "COMPLIANCE"], var.object_lock_mode)
    error_message = "object_lock_mode must be GOVERNANCE or COMPLIANCE."
  }
}

variable "object_lock_days" {
  description = "How long each object stays locked. It must cover the recovery window you promise plus the interval between full backups plus a margin (e.g. 7-day window + daily fulls + 2 days = 10), or a locked full could be deleted while WAL that needs it is still locked."
  type        = number
  default     = 10
  validation {
    condition     = var.object_lock_days >= 1 && floor(var.object_lock_days) == var.object_lock_days
    error_message = "object_lock_days must be a whole number of days, at least 1."
  }
}

variable "access_log_bucket" {
  description = "Existing bucket that receives S3 server access logs (your organisation's log bucket)."
  type        = string
}

variable "key_admin_arns" {
  description = "IAM principals allowed to administer the KMS key (not to use it)."
  type        = list(string)
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = { "app" = "pitrflow" }
}
