# The S3 repository for pitrflow backups and WAL: one bucket, encrypted with its own KMS
# key, private, versioned, with a lifecycle that keeps every object restorable.
terraform {
  required_version = ">= 1.5.0"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.0, < 7.0"
    }
  }
}

provider "aws" {
  region = var.region
}
