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
