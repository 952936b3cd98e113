"""Install scorehmr_ros as an ament_python package or with pip."""

from glob import glob

from setuptools import find_packages, setup

package_name = 'scorehmr_ros'

setup(
    name=package_name,
    version='0.1.0',
    packages=find_packages(include=['scorehmr_ros', 'scorehmr_ros.*']),
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + package_name]),
        ('share/' + package_name, ['package.xml']),
        ('share/' + package_name + '/launch', glob('launch/*.py')),
        ('share/' + package_name + '/config', glob('config/*.yaml')),
    ],
    # models/: the shipped small mocap prior and its model card; data/: held-out mocap poses
    # of the demo scenes with their licence (read from the file system, hence not zip safe).
    package_data={'scorehmr_ros': ['data/*.yaml', 'data/*.npz', 'data/*.md',
                                   'data/LICENSE.bvhtools', 'models/*.pt', 'models/*.md']},
    install_requires=['setuptools'],
    zip_safe=False,
    maintainer='scorehmr_ros developers',
    maintainer_email='scorehmr-ros@users.noreply.github.com',
    description='ScoreHMR score-guided diffusion for 3D human recovery as a ROS 2 node '
                'and a Python library.',
    license='MIT',
    python_requires='>=3.10',
    entry_points={
        'console_scripts': [
            'scorehmr = scorehmr_ros.cli:main',
            'scorehmr-node = scorehmr_ros.ros.node:main',
            'scorehmr-detector = scorehmr_ros.ros.detector_node:main',
            'scorehmr-launch = scorehmr_ros.launcher:main',
            'scorehmr-replay = scorehmr_ros.ros.replay:main',
        ],
    },
)
