# Copyright (c) mmdet-psbn contributors. All rights reserved.
